"""The documents an operator reads stay true: every setting is in the README
table, render.yaml wires only real settings, and the commands it runs exist.
And the test suite keeps its own shape: shared helpers live in `tests/support/`."""

from __future__ import annotations

import ast
import re
import secrets
import shlex
from pathlib import Path
from typing import Any

import yaml

from core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
RENDER_ONLY = {"PYTHON_VERSION"}  # read by Render's Python runtime, not by Skygate
EXTERNAL = {"PROMETHEUS_MULTIPROC_DIR"}  # read by prometheus-client


def readme_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, flags=re.MULTILINE))


def test_readme_documents_every_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    documented = readme_variables()
    assert settings - documented == set(), "settings missing from the README table"
    assert documented - settings - EXTERNAL == set(), "README documents unknown variables"


def test_render_blueprint_wires_the_service() -> None:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    services = {s["name"]: s for s in blueprint["services"]}
    web = services["skygate"]
    assert web["type"] == "web" and web["runtime"] == "python"
    assert web["healthCheckPath"] == "/ready"
    assert web["preDeployCommand"] == "alembic upgrade head"
    assert shlex.split(web["startCommand"]) == [
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "main_enterprise:app",
    ]
    assert "--require-hashes -r requirements.txt" in web["buildCommand"]

    env = {e["key"]: e for e in web["envVars"]}
    settings = {name.upper() for name in Settings.model_fields}
    assert set(env) - settings - RENDER_ONLY == set(), "render.yaml sets unknown variables"
    assert env["ENVIRONMENT"]["value"] == "production"
    assert env["DATABASE_URL"]["fromDatabase"]["name"] == blueprint["databases"][0]["name"]
    redis = env["REDIS_URL"]["fromService"]
    assert services[redis["name"]]["type"] == "keyvalue"
    assert services[redis["name"]]["maxmemoryPolicy"] == "allkeys-lru"
    for secret in (
        "JWT_SECRET_KEY",
        "ADMIN_API_KEY",
        "ENCRYPTION_MASTER_KEY",
        "SENTRY_DSN",
        "CORS_ORIGINS",
        "METRICS_TOKEN",
        "OPENAI_API_KEY",
    ):
        assert env[secret].get("generateValue") is True or env[secret].get("sync") is False
        assert "value" not in env[secret]


def test_render_blueprint_passes_the_production_checks() -> None:
    """What Render would start with (generated secrets, prompted values filled in)
    passes the production refusals: no unsafe default ships in the blueprint."""
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    web = next(s for s in blueprint["services"] if s["name"] == "skygate")
    values: dict[str, Any] = {}
    for item in web["envVars"]:
        key = item["key"]
        if key in RENDER_ONLY:
            continue
        if "value" in item:
            values[key.lower()] = str(item["value"])
        elif item.get("generateValue"):
            values[key.lower()] = secrets.token_urlsafe(32)  # Render: 256 random bits
        elif "fromDatabase" in item:
            values[key.lower()] = "postgres://skygate:pw@db.internal:5432/skygate"
        elif "fromService" in item:
            values[key.lower()] = "redis://red-internal:6379"
    values["openai_api_key"] = "sk-prompted-at-apply-time"
    settings = Settings(_env_file=None, **values)
    assert settings.is_production and settings.metrics_token is not None
    assert settings.forwarded_trusted_hops == 1


def test_makefile_has_the_documented_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test", "serve", "migrate", "lint", "lock"):
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (`from a import b` counts `a` and `a.b`:
    `b` may be a module), relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    """A helper in a test module drags that module's tests into every importer's
    collection and breaks when they move; shared code belongs in tests/support/."""
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        for module in imported_modules(path)
        if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")
    }
    assert offenders == set()
