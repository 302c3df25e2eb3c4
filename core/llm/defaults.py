"""The router config used when no `ROUTER_CONFIG` file is given.

With provider keys in the environment: one model group per provider with a key
(`config_from_providers`), each serving the provider's default model from
`core.llm.providers`. With none, in development only: the offline demo group
(`demo_config`). Secrets stay in `ProviderCredentials`, apart from the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from core.llm.config import RouterConfig, RouterConfigError
from core.llm.demo import DEMO_MODEL
from core.llm.providers import BUILTIN_PROVIDERS, DEFAULT_MODELS


@dataclass(frozen=True, slots=True)
class ProviderCredentials:
    """A provider's key and optional base URL, as read from the environment. Kept
    apart from `RouterConfig`, which never holds secrets."""

    kind: str
    api_key: str | None = None
    api_base: str | None = None


def config_from_providers(
    providers: Mapping[str, ProviderCredentials],
    *,
    openai_model: str,
    openai_model_fallback: str | None,
    defaults: Mapping[str, str] = DEFAULT_MODELS,
) -> RouterConfig | None:
    """One group per provider with a key, in the mapping's order. OpenAI serves
    `openai_model`, falling back to `openai_model_fallback` when that is set and
    different; every other kind serves `defaults[kind]` (kinds without a default are
    skipped). None when no provider has a key."""
    groups: dict[str, list[dict[str, str]]] = {}
    fallbacks: dict[str, list[str]] = {}

    def add(name: str, kind: str) -> None:
        deployments = groups.setdefault(name, [])
        if {"provider": kind, "model": name} not in deployments:
            deployments.append({"provider": kind, "model": name})

    for credentials in providers.values():
        if not (credentials.api_key or "").strip():
            continue
        if credentials.kind == "openai":  # its groups are settings: OPENAI_MODEL(_FALLBACK)
            add(openai_model, "openai")
            if openai_model_fallback and openai_model_fallback != openai_model:
                add(openai_model_fallback, "openai")
                fallbacks[openai_model] = [openai_model_fallback]
        elif credentials.kind in BUILTIN_PROVIDERS and credentials.kind in defaults:
            add(defaults[credentials.kind], credentials.kind)
    if not groups:
        return None

    data = {
        "model_groups": [{"name": n, "deployments": d} for n, d in groups.items()],
        "fallbacks": fallbacks,
    }
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise RouterConfigError(
            [
                f"provider settings: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors()
            ]
        ) from None


def demo_config() -> RouterConfig:
    """The offline demo group. Its deployment names `openai` only to pass the schema;
    the factory serves every deployment of a demo config with the demo provider."""
    return RouterConfig.model_validate(
        {
            "model_groups": [
                {
                    "name": DEMO_MODEL,
                    "description": "Offline demo model (development only, no provider)",
                    "deployments": [{"provider": "openai", "model": DEMO_MODEL}],
                }
            ]
        }
    )
