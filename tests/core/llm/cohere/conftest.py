"""The Cohere tests' gateway (`tests.support.cohere`): `client` talks to a gateway whose
groups are Cohere deployments on the fake Cohere upstream and on `replay`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.cohere import cohere_gateway
from tests.support.replay import Replay


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    async with Replay() as server:
        yield server


@pytest.fixture
async def client(
    upstream: FakeUpstream, replay: Replay, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with cohere_gateway(upstream, replay, sqlite_url, tmp_path) as http:
        yield http
