"""Settings: defaults that run with nothing set, URL normalisation, and the
production refusals an operator would hit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import Settings
from core.llm.providers import BASE_SETTINGS
from database.engine import DEFAULT_DATABASE_URL, normalize_database_url
from tests.support.app import make_settings

ROOT = Path(__file__).resolve().parents[2]
STRONG = "x" * 32
PG = "postgresql://skygate:pw@db.internal:5432/skygate"


def production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "database_url": PG,
        "jwt_secret_key": STRONG,
        "admin_api_key": "admin-key-for-tests",
        "cors_origins": "https://app.devskyy.app",
        "openai_api_key": "sk-test-provider-key",
        "metrics_token": "metrics-token-for-tests",
    }
    values.update(overrides)
    return make_settings(**{k: v for k, v in values.items() if v is not None})


def readme_settings() -> dict[str, str]:
    """README's env-var table: variable -> its default cell."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \| (.*?) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def shown(default: object) -> str:
    """A default as README writes it."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer() and default != 0:
        return str(int(default))
    return str(default)


def test_every_setting_is_in_the_readme_with_the_default_it_really_has() -> None:
    """The README's table is what operators configure from: a setting missing from it,
    or a default that drifted from the code, is a bug an operator would hit."""
    rows = readme_settings()
    provider_bases = {name.upper() for name in BASE_SETTINGS}  # the table's defaults
    for name, field in Settings.model_fields.items():
        variable = name.upper()
        assert variable in rows, f"{variable} is missing from README.md's settings table"
        cell = rows[variable]
        default = field.get_default(call_default_factory=True)
        if default is None:
            assert cell == "unset" or variable in provider_bases or cell == "auto", (
                variable,
                cell,
            )
        elif default == []:
            assert cell == "empty", (variable, cell)
        else:
            assert cell == f"`{shown(default)}`", (variable, cell, default)


def test_nothing_set_is_the_embedded_default() -> None:
    """With no environment a development server starts on the SQLite file and no
    Redis (make run), and auth is off only because no admin key exists."""
    settings = make_settings()
    assert settings.environment == "development"
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.is_sqlite and settings.redis_url is None
    assert not settings.auth_enabled


def test_safe_production_settings_are_accepted() -> None:
    settings = production()
    assert settings.is_production
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"database_url": None}, "DATABASE_URL"),
        ({"database_url": "sqlite:///./prod.db"}, "DATABASE_URL"),
        ({"jwt_secret_key": None}, "JWT_SECRET_KEY"),
        ({"jwt_secret_key": "short-secret"}, "JWT_SECRET_KEY"),
        ({"admin_api_key": None}, "ADMIN_API_KEY"),
        ({"cors_origins": "https://app.devskyy.app,*"}, "CORS_ORIGINS"),
        ({"openai_api_key": None}, "OPENAI_API_KEY"),
        ({"metrics_token": None}, "METRICS_TOKEN"),
    ],
)
def test_production_refuses_unsafe_values(overrides: dict[str, object], variable: str) -> None:
    with pytest.raises(ValidationError) as info:
        production(**overrides)
    assert variable in str(info.value)


def test_metrics_public_stands_in_for_the_metrics_token() -> None:
    assert production(metrics_token=None, metrics_public=True).metrics_public


@pytest.mark.parametrize(
    ("environment", "admin_key", "enabled"),
    [
        ("development", None, False),
        ("development", "admin-key-for-tests", True),
        ("staging", None, True),
        ("staging", "admin-key-for-tests", True),
    ],
)
def test_auth_is_off_only_in_development_without_an_admin_key(
    environment: str, admin_key: str | None, enabled: bool
) -> None:
    settings = make_settings(environment=environment, admin_api_key=admin_key)
    assert settings.auth_enabled is enabled


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("postgresql://u:p@h/db?sslmode=require", "postgresql+asyncpg://u:p@h/db?ssl=require"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("sqlite:///./data/x.db", "sqlite+aiosqlite:///./data/x.db"),
    ],
)
def test_platform_database_urls_are_used_with_async_drivers(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert make_settings(database_url=given).database_url == expected


def test_cors_origins_are_a_comma_list() -> None:
    settings = make_settings(cors_origins=" https://a.example.com , https://b.example.com/ ")
    assert settings.cors_origins == ["https://a.example.com", "https://b.example.com"]
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        make_settings(cors_origins="not a url")
    with pytest.raises(ValidationError, match="CORS_ORIGIN_REGEX"):
        make_settings(cors_origin_regex="https://(unclosed")


def _refusal_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ENVIRONMENT": "production",
        "DATABASE_URL": PG,
        "JWT_SECRET_KEY": "too-short",
        "ADMIN_API_KEY": "admin-key-for-tests",
        "OPENAI_API_KEY": "sk-test-provider-key",
    }


def test_embedded_server_refuses_to_start_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "main_enterprise.py"],
        cwd=ROOT,
        env=_refusal_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "JWT_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_gunicorn_master_refuses_before_forking_workers() -> None:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "main_enterprise:app"],
        cwd=ROOT,
        env=_refusal_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "JWT_SECRET_KEY" in result.stderr
    assert "Booting worker" not in result.stderr


def test_gunicorn_refuses_an_invalid_router_config_naming_the_line(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "model_groups:\n  - name: a\n    deployments:\n"
        "      - provider: openai\n        model: x\n        weight: -1\n"
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "main_enterprise:app"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ROUTER_CONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{config}:6: model_groups.0.deployments.0.weight" in result.stderr
