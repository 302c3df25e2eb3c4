"""`skygate check-config` as a CI step: exit 0 for an environment Skygate starts
with, 1 with start-up's own message (file:line for the YAML files) for one it
refuses; offline unless `--database` is asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigurationError
from core.llm.factory import build_router
from database.schema import head_revisions
from main_enterprise import create_app
from tests.support.app import make_settings
from tests.support.cli import arun, environment, run

# Nothing listens on port 1: a check that connected would fail.
UNREACHABLE_DB = "postgresql://skygate:db-password-123@127.0.0.1:1/skygate"
PRODUCTION = {
    "ENVIRONMENT": "production",
    "DATABASE_URL": UNREACHABLE_DB,
    "JWT_SECRET_KEY": "j" * 48,
    "ADMIN_API_KEY": "admin-key-for-cli-tests-0123456789",
    "METRICS_TOKEN": "metrics-token-for-cli-tests",
}
ROUTER = (
    "providers:\n  local:\n    kind: openai_compatible\n"
    "    api_base: http://127.0.0.1:9/v1\n"
    "model_groups:\n  - name: chat\n    deployments: [{provider: local, model: m}]\n"
)
AGENT = "agents:\n  - id: helper\n    name: Helper\n    model: chat\n"  # lines 1-4
BAD_WEIGHT = (
    "model_groups:\n  - name: a\n    deployments:\n"
    "      - provider: openai\n        model: x\n        weight: -1\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def startup_refusal(**settings: str) -> str:
    """What the app's real lifespan refuses to start with (the message start-up prints)."""
    app = create_app(make_settings(**settings))
    with pytest.raises(ConfigurationError) as refused:
        async with app.router.lifespan_context(app):
            pass
    return str(refused.value)


def test_a_good_production_environment_passes_offline(tmp_path: Path) -> None:
    router = write(tmp_path / "router.yaml", ROUTER)
    agents = write(tmp_path / "agents.yaml", AGENT)
    env = environment(**PRODUCTION, ROUTER_CONFIG=str(router), AGENTS_CONFIG=str(agents))
    checked = run("check-config", cwd=tmp_path, env=env)
    assert checked.code == 0, checked.output
    assert "Configuration OK (ENVIRONMENT=production)" in checked.stdout
    assert "1 model (chat), 1 deployment" in checked.stdout
    assert f"agents: 1, from AGENTS_CONFIG {agents}" in checked.stdout
    assert "db-password-123" not in checked.output and "j" * 48 not in checked.output


def test_the_embedded_default_passes_with_start_ups_warning(tmp_path: Path) -> None:
    checked = run("check-config", cwd=tmp_path)
    assert checked.code == 0, checked.output
    assert "offline demo model only" in checked.stdout
    assert "ADMIN_API_KEY is not set: authentication is OFF" in checked.stdout
    assert not (tmp_path / "data").exists()  # the SQLite default was not opened


def test_a_bad_router_config_fails_naming_file_and_line_as_start_up(tmp_path: Path) -> None:
    config = write(tmp_path / "router.yaml", BAD_WEIGHT)
    checked = run("check-config", cwd=tmp_path, env=environment(ROUTER_CONFIG=str(config)))
    assert checked.code == 1, checked.output
    assert f"{config}:6: model_groups.0.deployments.0.weight" in checked.stderr
    with pytest.raises(ConfigurationError) as at_start:
        build_router(make_settings(router_config=str(config)))
    assert checked.stderr.strip() == str(at_start.value)
    assert "Traceback" not in checked.stderr


async def test_a_bad_agents_config_fails_naming_file_and_line_as_start_up(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = write(tmp_path / "agents.yaml", AGENT.replace("model: chat", "model: gpt-nope"))
    env = environment(AGENTS_CONFIG=str(config))
    checked = await arun("check-config", cwd=tmp_path, env=env)
    assert checked.code == 1, checked.output
    assert (
        f"{config}:4: agents.0.model: 'gpt-nope' is not a model group or alias of this "
        "gateway (known: demo)"
    ) in checked.stderr
    at_start = await startup_refusal(database_url=sqlite_url, agents_config=str(config))
    assert checked.stderr.strip().endswith(at_start)  # after start-up's demo-model warning


def test_production_without_a_provider_key_fails(tmp_path: Path) -> None:
    checked = run("check-config", cwd=tmp_path, env=environment(**PRODUCTION))
    assert checked.code == 1, checked.output
    assert "refusing to start in production" in checked.stderr
    assert "a provider key (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or ROUTER_CONFIG" in (
        checked.stderr
    )


def test_production_with_a_deployment_missing_its_key_fails(tmp_path: Path) -> None:
    config = write(
        tmp_path / "router.yaml",
        "model_groups:\n  - name: g\n    deployments: [{provider: anthropic, model: m}]\n",
    )
    env = environment(**PRODUCTION, ROUTER_CONFIG=str(config))
    checked = run("check-config", cwd=tmp_path, env=env)
    assert checked.code == 1, checked.output
    assert (
        "LLM providers are missing their keys; set: ANTHROPIC_API_KEY (used by model group 'g')"
        in checked.stderr
    )
    with_key = run("check-config", cwd=tmp_path, env={**env, "ANTHROPIC_API_KEY": "sk-ant-x"})
    assert with_key.code == 0, with_key.output


def test_a_job_types_module_that_cannot_load_fails(tmp_path: Path) -> None:
    env = environment(JOB_TYPES_MODULE="no_such_module_for_skygate")
    checked = run("check-config", cwd=tmp_path, env=env)
    assert checked.code == 1, checked.output
    assert "JOB_TYPES_MODULE: cannot load 'no_such_module_for_skygate'" in checked.stderr


def test_database_is_checked_only_when_asked(sqlite_url: str, tmp_path: Path) -> None:
    router = write(tmp_path / "router.yaml", ROUTER)
    production = environment(**PRODUCTION, ROUTER_CONFIG=str(router))
    unreachable = run("check-config", "--database", cwd=tmp_path, env=production)
    assert unreachable.code == 1, unreachable.output
    assert "postgresql+asyncpg://skygate:***@127.0.0.1:1/skygate" in unreachable.stderr
    assert "db-password-123" not in unreachable.output

    at_head = run(
        "check-config", "--database", cwd=tmp_path, env=environment(DATABASE_URL=sqlite_url)
    )
    assert at_head.code == 0, at_head.output
    assert "(reachable, migrations at head)" in at_head.stdout

    empty = environment(DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    pending = run("check-config", "--database", cwd=tmp_path, env=empty)
    assert pending.code == 1, pending.output
    head = ",".join(sorted(head_revisions()))
    assert f"database migrations not at head (at none, head {head})" in pending.stderr
