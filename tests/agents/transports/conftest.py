"""The app served over real HTTP (`tests.support.agents.ServedGateway`): a real uvicorn
server in the test's loop (`tests.support.asgi_server`), on SQLite, with the fake
upstream as the provider, an agent with a built-in tool and one with a client tool,
and a key of tenant team-a on the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from main_enterprise import create_app
from tests.support.agents import ServedGateway
from tests.support.app import make_settings
from tests.support.asgi_server import serve
from tests.support.auth import ADMIN, bearer, insert_key
from tests.support.llm import router_yaml

AGENTS = """\
agents:
  - id: scripted
    name: Scripted
    model: primary
    instructions: Use the calculator for arithmetic.
    tools: [calculator]
  - id: desk
    name: Desk
    model: primary
    tools:
      - type: client
        name: lookup
        description: Looks a key up in the caller's own records.
        parameters:
          type: object
          properties: {key: {type: string}}
          required: [key]
"""


@pytest.fixture
async def gateway(
    upstream: FakeUpstream,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ServedGateway]:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")  # router_yaml's claude group
    router = tmp_path / "router.yaml"
    router.write_text(router_yaml(upstream, timeout=30))
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS)
    settings = make_settings(
        database_url=sqlite_url,
        router_config=str(router),
        agents_config=str(agents),
        admin_api_key=ADMIN,
        enable_cache=False,  # every turn reaches the upstream, whatever ran before it
        usage_flush_seconds=0.1,
        stream_heartbeat_seconds=1,
    )
    app = create_app(settings)
    async with (
        serve(app) as served,
        httpx.AsyncClient(base_url=served.http_url, timeout=30) as http,
    ):
        # The socket listens before the lifespan has run: the first answer means it has.
        assert (await http.get("/live")).status_code == 200
        key, _ = await insert_key(app, tenant="team-a")
        http.headers.update(bearer(key))
        yield ServedGateway(app, http, served.http_url, key, upstream)
