"""Anthropic through the gateway, for tests/core/llm/anthropic/: a gateway whose groups
are Anthropic deployments on the fake upstream (its Messages API) and on a `Replay`.

Groups: `claude` (the fake, its host as the base URL, as the Anthropic SDKs take it),
`claude-v1` (the fake, its version root `/v1` as the base URL, as litellm's `api_base`
may have it), `replayed` (the `Replay`)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from bench.fake_upstream import FakeUpstream
from tests.support.anthropic import MODEL
from tests.support.app import NO_RETRIES, routed_app
from tests.support.replay import Replay

KEY = "fake-anthropic-key"
V1_MODEL = "claude-test-v1"


@asynccontextmanager
async def anthropic_gateway(
    upstream: FakeUpstream, replay: Replay, database_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """A running gateway (no cache, no retries) and its client; the key is ANTHROPIC_API_KEY."""
    router = NO_RETRIES + textwrap.dedent(f"""\
        providers:
          fake: {{kind: anthropic, api_base: "{upstream.root_url}"}}
          fake-v1: {{kind: anthropic, api_base: "{upstream.root_url}/v1/"}}
          replay: {{kind: anthropic, api_base: "{replay.url}"}}
        model_groups:
          - {{name: claude, deployments: [{{provider: fake, model: {MODEL}}}]}}
          - {{name: claude-v1, deployments: [{{provider: fake-v1, model: {V1_MODEL}}}]}}
          - {{name: replayed, deployments: [{{provider: replay, model: {MODEL}}}]}}
        """)
    async with routed_app(
        router, tmp_path, anthropic_api_key=KEY, database_url=database_url
    ) as http:
        yield http
