"""What each upstream failure becomes for the client, the same on every provider path
(Anthropic's, Gemini's and Cohere's native translations, and the direct path for
parity), each provider failing in its own error format (`bench.fake_upstream`):

- a 400 is the client's: the same status with the provider's message, not retried;
- a 429 passes the provider's retry hint (`Retry-After`, or Google's `RetryInfo`);
- a 5xx or an answer that is not the provider's format is a bad gateway that does not
  pass on the provider's message (it may name internals);
- a stream cut short ends with an error event, never `[DONE]`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import routed_app
from tests.support.contracts import assert_valid, sse_data
from tests.support.providers import NATIVE, provider_router_yaml, set_keys
from tests.support.requests import CHAT, chat

PROVIDERS = ["anthropic", "gemini", "cohere", "openai"]


@pytest.fixture
async def client(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    set_keys(monkeypatch)
    async with routed_app(
        provider_router_yaml(upstream), tmp_path, database_url=sqlite_url
    ) as http:
        yield http  # no retries, no cooldown, no cache


async def failed(
    client: httpx.AsyncClient, group: str, status: int, **extra: object
) -> dict[str, Any]:
    response = await client.post(CHAT, json=chat("hi", model=group, **extra))
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", error)
    return error


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_400_is_the_clients_with_the_providers_message(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, stream: bool
) -> None:
    native = NATIVE[provider]
    says = "invalid request: temperature must be between 0 and 1"
    upstream.set_behaviour(native.model, "status", status=400, message=says)
    error = await failed(client, native.group, 400, stream=stream)
    assert error["error"]["message"] == says
    assert upstream.calls(native.model) == 1  # not retried


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_passes_the_providers_retry_hint(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    native = NATIVE[provider]
    upstream.set_behaviour(native.model, "status", status=429, retry_after=7)
    response = await client.post(CHAT, json=chat("hi", model=native.group))
    assert response.status_code == 429, response.text
    assert_valid("ErrorResponse", response.json())
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [500, 503, 529])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_server_error_is_a_bad_gateway(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, status: int
) -> None:
    """529 is Anthropic's `overloaded_error`; every provider's 5xx is the same to a client."""
    native = NATIVE[provider]
    upstream.set_behaviour(native.model, "status", status=status, message="internal: secret")
    error = await failed(client, native.group, 502)
    assert "internal: secret" not in json.dumps(error)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_answer_not_in_the_providers_format_is_a_bad_gateway(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, stream: bool
) -> None:
    native = NATIVE[provider]
    upstream.set_behaviour(native.model, "garbage")
    response = await client.post(CHAT, json=chat("hi", model=native.group, stream=stream))
    if not stream or response.status_code != 200:
        assert response.status_code == 502, response.text
        assert_valid("ErrorResponse", response.json())
        return
    data = sse_data(response.content)  # the head was sent before the garbage came
    assert data[-1] != b"[DONE]"
    assert_valid("ErrorResponse", json.loads(data[-1]))


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stream_cut_short_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    native = NATIVE[provider]
    upstream.set_behaviour(native.model, "cut", after_chunks=1)
    body = chat("tell me a long story please", model=native.group, stream=True)
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] != b"[DONE]"
    error = json.loads(data[-1])
    assert_valid("ErrorResponse", error)
    assert error["error"]["code"] == "stream_interrupted"
    for payload in data[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", json.loads(payload))
