"""AGENTS_CONFIG mistakes that stop the start, each named with its file and line, and
the agents and active runs that /health reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigurationError
from main_enterprise import create_app
from tests.support.agents import ApiGateway
from tests.support.app import make_settings

# -- AGENTS_CONFIG and /health -----------------------------------------------------------
AGENT = "agents:\n  - id: a\n    name: A\n    model: demo\n"  # lines 1-4
BAD_CONFIGS = {
    "unknown field": (AGENT + "    colour: red\n", ":5: agents.0.colour: unknown field"),
    "bad id": (AGENT.replace("id: a", "id: Not An Id"), ":2: agents.0.id: String should match"),
    "duplicate id": (AGENT + AGENT[8:], ":5: agents.1.id: 'a' is already used by agents.0"),
    "duplicate key": (
        AGENT + "    name: B\n",
        ":5: agents.0.name: duplicate key (first at line 3)",
    ),
    "bad tool": (
        AGENT + "    tools:\n      - calculator\n      - eval\n",
        ":7: agents.0.tools.1: unknown built-in tool 'eval'",
    ),
    "secret in a url": (
        AGENT
        + "    tools:\n      - type: http\n        name: t\n        url: http://h.test/${K}\n",
        ":8: agents.0.tools.0.url: secrets belong in a header value",
    ),
    "looser than possible": (
        AGENT + "    limits: {max_turns: 0}\n",
        ":5: agents.0.limits.max_turns:",
    ),
    "not a mapping": ("- id: a\n", ":1: top level must be a mapping with agents"),
    "model not a group": (
        AGENT.replace("model: demo", "model: gpt-nope"),
        ":4: agents.0.model: 'gpt-nope' is not a model group or alias of this gateway "
        "(known: demo)",
    ),
}


async def start(settings_url: str, config: Path) -> str:
    """Start the app's real lifespan; the ConfigurationError it refuses with."""
    app = create_app(make_settings(database_url=settings_url, agents_config=str(config)))
    with pytest.raises(ConfigurationError) as refused:
        async with app.router.lifespan_context(app):
            pass
    return str(refused.value)


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
async def test_a_mistake_in_agents_config_stops_the_start_naming_its_line(
    text: str, expected: str, sqlite_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(text)
    message = await start(sqlite_url, config)
    assert f"{config}{expected}" in message, message


async def test_an_agent_on_an_unknown_model_stops_the_start(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(AGENT.replace("model: demo", "model: gpt-nope"))
    message = await start(sqlite_url, config)
    assert "'gpt-nope'" in message and "demo" in message, message
    assert "not found" in await start(sqlite_url, tmp_path / "missing.yaml")


async def test_health_counts_agents_and_active_runs(gateway: ApiGateway) -> None:
    health = await gateway.client.get("/health")
    assert health.status_code == 200
    assert health.json()["agents"] == {"total": 4, "active": 3, "runs_active": 0}
    assert health.json()["services"]["agents"]["status"] == "ok"
