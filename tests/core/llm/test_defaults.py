"""The router config built from provider keys when no ROUTER_CONFIG file is given."""

from __future__ import annotations

import pytest

from core.llm.config import RouterConfigError
from core.llm.defaults import ProviderCredentials, config_from_providers

DEFAULTS = {
    "anthropic": "claude-3-5-haiku-latest",
    "google": "gemini-2.0-flash",
    "groq": "llama-3.3-70b-versatile",
    "mistral": "mistral-small-latest",
    "cohere": "command-r",
}


def test_no_keys_gives_no_config() -> None:
    providers = {
        "openai": ProviderCredentials(kind="openai"),
        "anthropic": ProviderCredentials(kind="anthropic", api_key="  "),
    }
    assert (
        config_from_providers(
            providers, openai_model="gpt-4o-mini", openai_model_fallback=None, defaults=DEFAULTS
        )
        is None
    )
    assert (
        config_from_providers(
            {}, openai_model="gpt-4o-mini", openai_model_fallback=None, defaults=DEFAULTS
        )
        is None
    )


def test_openai_with_fallback() -> None:
    config = config_from_providers(
        {"openai": ProviderCredentials(kind="openai", api_key="sk-test")},
        openai_model="gpt-4o",
        openai_model_fallback="gpt-4o-mini",
        defaults=DEFAULTS,
    )
    assert config is not None
    assert config.public_names() == ["gpt-4o", "gpt-4o-mini"]
    assert [(d.provider, d.model) for d in config.model_groups[0].deployments] == [
        ("openai", "gpt-4o")
    ]
    assert [(d.provider, d.model) for d in config.model_groups[1].deployments] == [
        ("openai", "gpt-4o-mini")
    ]
    assert config.fallbacks == {"gpt-4o": ("gpt-4o-mini",)}
    assert config.fallback_chain("gpt-4o") == ["gpt-4o", "gpt-4o-mini"]
    assert config.providers == {}


def test_openai_fallback_same_as_primary_is_ignored() -> None:
    config = config_from_providers(
        {"openai": ProviderCredentials(kind="openai", api_key="sk-test")},
        openai_model="gpt-4o",
        openai_model_fallback="gpt-4o",
        defaults=DEFAULTS,
    )
    assert config is not None
    assert config.public_names() == ["gpt-4o"]
    assert config.fallbacks == {}


def test_anthropic_only() -> None:
    config = config_from_providers(
        {
            "openai": ProviderCredentials(kind="openai"),
            "anthropic": ProviderCredentials(kind="anthropic", api_key="sk-ant"),
        },
        openai_model="gpt-4o-mini",
        openai_model_fallback="gpt-4o",
        defaults=DEFAULTS,
    )
    assert config is not None
    assert config.public_names() == ["claude-3-5-haiku-latest"]
    deployment = config.model_groups[0].deployments[0]
    assert (deployment.provider, deployment.model) == ("anthropic", "claude-3-5-haiku-latest")
    assert config.fallbacks == {}


def test_every_kind_with_a_key_gets_a_group_in_order() -> None:
    kinds = ["groq", "openai", "google", "mistral", "cohere", "anthropic"]
    config = config_from_providers(
        {kind: ProviderCredentials(kind=kind, api_key="k") for kind in kinds},
        openai_model="gpt-4o-mini",
        openai_model_fallback=None,
        defaults=DEFAULTS,
    )
    assert config is not None
    assert config.public_names() == [
        "llama-3.3-70b-versatile",
        "gpt-4o-mini",
        "gemini-2.0-flash",
        "mistral-small-latest",
        "command-r",
        "claude-3-5-haiku-latest",
    ]
    assert all(
        g.deployments[0].provider == k for g, k in zip(config.model_groups, kinds, strict=True)
    )


def test_kind_without_a_default_is_skipped() -> None:
    config = config_from_providers(
        {"cohere": ProviderCredentials(kind="cohere", api_key="k")},
        openai_model="gpt-4o-mini",
        openai_model_fallback=None,
        defaults={"anthropic": "claude-3-5-haiku-latest"},
    )
    assert config is None


def test_bad_model_name_from_settings_is_a_config_error() -> None:
    with pytest.raises(RouterConfigError, match="provider settings: model_groups.0.name"):
        config_from_providers(
            {"openai": ProviderCredentials(kind="openai", api_key="sk")},
            openai_model="not a name",
            openai_model_fallback=None,
            defaults=DEFAULTS,
        )


def test_credentials_are_frozen() -> None:
    credentials = ProviderCredentials(kind="openai", api_key="sk")
    with pytest.raises(AttributeError):
        credentials.api_key = "other"  # type: ignore[misc]
