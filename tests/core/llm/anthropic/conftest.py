"""The Anthropic provider tests' gateway (`tests.support.anthropic_gateway`): `client`
talks to a gateway whose groups are Anthropic deployments on the fake upstream and on
`replay`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.llm.anthropic_request import MESSAGES_PATH
from tests.support.anthropic_gateway import anthropic_gateway
from tests.support.replay import Replay


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    async with Replay(MESSAGES_PATH) as server:
        yield server


@pytest.fixture
async def client(
    upstream: FakeUpstream, replay: Replay, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with anthropic_gateway(upstream, replay, sqlite_url, tmp_path) as http:
        yield http
