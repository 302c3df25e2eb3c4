"""The provider table is the single source of provider knowledge: every kind the
router config accepts has an entry, every entry's settings exist in Settings and in
README's environment table, and the factory, the defaults and the cost table follow
the entry (so adding a provider is one entry, and a missing piece fails here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from core.config import ConfigurationError, Settings
from core.llm.config import RouterConfig
from core.llm.costs import CostTable
from core.llm.factory import build_router
from core.llm.providers import (
    BUILTIN_PROVIDERS,
    DEFAULT_MODELS,
    PROVIDER_KINDS,
    PROVIDERS,
    ProviderKind,
    ProviderSpec,
)
from tests.support.app import make_settings

README = Path(__file__).resolve().parents[3] / "README.md"
WITH_KEY = [spec for spec in PROVIDERS.values() if spec.key_setting]
WITH_DEFAULT = [spec for spec in PROVIDERS.values() if spec.default_model]


def readme_rows() -> dict[str, str]:
    """README's environment table: variable -> its whole row."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \|", line)
        if match:
            rows[match.group(1)] = line
    return rows


def settings_with_key(spec: ProviderSpec, **more: object) -> Settings:
    assert spec.key_setting is not None
    return make_settings(**{spec.key_setting: f"key-for-{spec.kind}-0000"}, **more)


# -- the table against the schema, Settings and README ---------------------------------
def test_router_config_kinds_are_the_table() -> None:
    assert get_args(ProviderKind) == PROVIDER_KINDS
    assert set(PROVIDER_KINDS) == set(PROVIDERS) - {"demo"}
    assert "openai_compatible" not in BUILTIN_PROVIDERS  # needs an api_base: declared only
    assert set(BUILTIN_PROVIDERS) == {k for k in PROVIDER_KINDS if not PROVIDERS[k].self_hosted}


@pytest.mark.parametrize("kind", ["demo", "ollama"])
def test_a_kind_outside_the_table_is_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="kind"):
        RouterConfig.model_validate(
            {
                "providers": {"x": {"kind": kind, "api_base": "http://127.0.0.1:1/v1"}},
                "model_groups": [{"name": "g", "deployments": [{"provider": "x", "model": "m"}]}],
            }
        )


def test_every_entry_names_settings_that_exist() -> None:
    fields = Settings.model_fields
    for spec in PROVIDERS.values():
        for name in (spec.key_setting, spec.base_setting):
            if name is not None:
                assert name in fields, f"{spec.kind}: Settings has no field {name}"
        if spec.key_setting:
            assert fields[spec.key_setting].annotation == SecretStr | None, spec.kind


def test_no_provider_setting_outside_the_table() -> None:
    """A provider key or base added to Settings without an entry would be silently unused."""
    claimed = {n for s in PROVIDERS.values() for n in (s.key_setting, s.base_setting) if n}
    provider_like = {
        name
        for name in Settings.model_fields
        if name.endswith(("_api_key", "_api_base")) and name != "admin_api_key"
    }
    assert provider_like == claimed


def test_readme_documents_every_provider_variable() -> None:
    rows = readme_rows()
    for spec in PROVIDERS.values():
        for variable in (spec.key_variable, spec.base_variable):
            if variable is not None:
                assert variable in rows, f"README's table has no row for {variable}"
        if spec.default_base and spec.base_variable:
            assert f"`{spec.default_base}`" in rows[spec.base_variable]
        if spec.default_model and spec.key_variable:
            row = rows[spec.key_variable]
            assert f"default group `{spec.default_model}`" in row
            assert ("through litellm" in row) == (spec.transport == "litellm"), row


# -- the table as Settings, the defaults, the factory and the costs read it -------------
@pytest.mark.parametrize("spec", WITH_KEY, ids=lambda s: s.kind)
def test_a_key_in_settings_is_a_credential_and_a_secret(spec: ProviderSpec) -> None:
    assert spec.key_setting is not None and spec.base_setting is not None
    settings = settings_with_key(spec)
    key = f"key-for-{spec.kind}-0000"
    assert settings.provider_credentials() == {spec.kind: (key, None)}
    assert key in settings.secret_values()
    blank = settings_with_key(spec, **{spec.base_setting: "  "})
    assert blank.provider_credentials()[spec.kind] == (key, None)
    based = settings_with_key(spec, **{spec.base_setting: "http://127.0.0.1:9/v1"})
    assert based.provider_credentials()[spec.kind] == (key, "http://127.0.0.1:9/v1")
    assert make_settings(**{spec.key_setting: " "}).provider_credentials() == {}


@pytest.mark.parametrize("spec", WITH_KEY, ids=lambda s: s.kind)
def test_production_accepts_any_provider_key(spec: ProviderSpec) -> None:
    settings = settings_with_key(
        spec,
        environment="production",
        database_url="postgresql://u:p@db.internal/skygate",
        jwt_secret_key="x" * 32,
        admin_api_key="admin-key-for-tests",
        metrics_public=True,
    )
    assert settings.is_production


@pytest.mark.parametrize("spec", WITH_DEFAULT, ids=lambda s: s.kind)
def test_a_key_alone_serves_the_default_group(spec: ProviderSpec) -> None:
    router, demo = build_router(settings_with_key(spec))
    assert demo is False
    assert router.public_names() == [spec.default_model]
    (deployment,) = router.deployments(spec.default_model or "")
    assert (deployment.kind, deployment.model) == (spec.kind, spec.default_model)
    assert deployment.transport == spec.transport
    assert deployment.api_base == spec.default_base
    assert deployment.api_key == f"key-for-{spec.kind}-0000"
    assert router.costs.known(spec.kind, spec.default_model or "")  # the litellm prefix is right


def test_openai_key_serves_the_openai_model_settings() -> None:
    router, _ = build_router(settings_with_key(PROVIDERS["openai"], openai_model_fallback=""))
    (deployment,) = router.deployments("gpt-4o-mini")
    assert (deployment.transport, deployment.api_base) == ("direct", "https://api.openai.com/v1")


def test_no_key_serves_the_demo_through_the_demo_transport() -> None:
    router, demo = build_router(make_settings())
    assert demo is True
    assert [(d.kind, d.transport) for d in router.all_deployments()] == [("demo", "demo")]


@pytest.mark.parametrize("spec", WITH_KEY, ids=lambda s: s.kind)
def test_a_missing_key_names_its_variable(spec: ProviderSpec, tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        f"model_groups:\n  - name: g\n    deployments:\n"
        f"      - {{provider: {spec.kind}, model: m}}\n"
    )
    with pytest.raises(ConfigurationError) as caught:
        build_router(make_settings(router_config=str(config)))
    assert f"{spec.key_variable} (used by model group 'g')" in str(caught.value)


def test_self_hosted_needs_no_key(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "providers:\n  local:\n    kind: openai_compatible\n"
        "    api_base: http://127.0.0.1:9/v1/\n    api_key_env: SKYGATE_TEST_UNSET_KEY\n"
        "model_groups:\n  - name: g\n    deployments: [{provider: local, model: m}]\n"
    )
    router, _ = build_router(make_settings(router_config=str(config)))
    (deployment,) = router.deployments("g")
    assert (deployment.transport, deployment.api_key) == ("direct", None)
    assert deployment.api_base == "http://127.0.0.1:9/v1"


def test_every_default_model_is_priced() -> None:
    table = CostTable.load(DEFAULT_MODELS.items())
    assert sorted(table.prices) == sorted(DEFAULT_MODELS.items())
