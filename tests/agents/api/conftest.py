"""The agents API in-process (`tests.support.agents.ApiGateway`): on SQLite with the
fake upstream as the provider, an agents file with one agent of each kind of tool
(a built-in, a client tool, a declared HTTP tool to the tool tests' server), an admin
key, and a key each for two tenants.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.agents import LITERAL, TOKEN, TOKEN_ENV, ApiGateway
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.echo_server import EchoServer
from tests.support.llm import LLMApp


def agents_yaml(echo: EchoServer) -> str:
    return textwrap.dedent(f"""\
        agents:
          - id: helper
            name: Helper
            description: Does arithmetic with the calculator.
            model: primary
            instructions: You are the file's helper.
            tools: [calculator]
            limits: {{max_turns: 4, max_tool_calls: 5}}
          - id: asker
            name: Asker
            model: primary
            instructions: Ask the client before acting.
            tools:
              - type: client
                name: confirm
                parameters:
                  type: object
                  properties: {{question: {{type: string}}}}
                  required: [question]
          - id: dormant
            name: Dormant
            model: fast
            status: disabled
          - id: crm
            name: CRM
            model: primary
            tools:
              - type: http
                name: lookup
                url: {echo.url}/text
                parameters: {{type: object, properties: {{item: {{type: string}}}}}}
                headers:
                  Authorization: "Bearer ${{{TOKEN_ENV}}}"
                  X-Team: {LITERAL}
        """)


@pytest.fixture
async def gateway(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    echo_server: EchoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[ApiGateway]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = tmp_path / "agents.yaml"
    config.write_text(agents_yaml(echo_server))
    async with llm_app(
        admin_api_key=ADMIN,
        agents_config=str(config),
        agent_tools_allowed_networks=["127.0.0.1/32"],
    ) as (app, client):
        a = bearer((await create_key(client, tenant="team-a"))["key"])
        b = bearer((await create_key(client, tenant="team-b"))["key"])
        yield ApiGateway(app, client, upstream, echo_server, a, b)
