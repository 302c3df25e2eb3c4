"""Builds the Router from Settings: the config (ROUTER_CONFIG or provider keys),
the credentials of each deployment, the providers and the cost table.

In development with no provider configured, the router serves only the offline
`demo` model. Production never gets the demo model (Settings refuses to start
without a provider). A deployment whose provider has no key is a configuration
error at start, naming the variable to set.
"""

from __future__ import annotations

import os
from typing import Any

import structlog
from opentelemetry.trace import Tracer

from core.config import ConfigurationError, Settings
from core.llm.anthropic import AnthropicProvider
from core.llm.cohere import CohereProvider
from core.llm.config import RouterConfig, RouterConfigError, load_router_config
from core.llm.costs import CostTable
from core.llm.defaults import ProviderCredentials, config_from_providers, demo_config
from core.llm.demo import DemoProvider
from core.llm.direct import DirectProvider
from core.llm.gemini import GeminiProvider
from core.llm.litellm_import import litellm_module
from core.llm.litellm_provider import LiteLLMProvider
from core.llm.providers import PROVIDERS
from core.llm.router import Router
from core.llm.traced import TracedProvider
from core.llm.translated import TranslatedProvider
from core.llm.types import Deployment, Provider
from core.observability.logging import redactor

log = structlog.get_logger("skygate.router")

# The providers translated natively, by their transport (`core.llm.providers`).
NATIVE: dict[str, type[TranslatedProvider]] = {
    "cohere": CohereProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


def _credentials(settings: Settings) -> dict[str, ProviderCredentials]:
    return {
        kind: ProviderCredentials(kind=kind, api_key=key, api_base=base)
        for kind, (key, base) in settings.provider_credentials().items()
    }


def router_config(settings: Settings) -> tuple[RouterConfig, bool]:
    """(config, is_demo)."""
    if settings.router_config:
        try:
            return load_router_config(settings.router_config), False
        except RouterConfigError as exc:
            raise ConfigurationError(f"ROUTER_CONFIG is invalid:\n{exc}") from None
    config = config_from_providers(
        _credentials(settings),
        openai_model=settings.openai_model,
        openai_model_fallback=settings.openai_model_fallback,
    )
    if config is not None:
        return config, False
    if settings.is_production:  # Settings refuses this already; never serve the demo
        raise ConfigurationError("no LLM provider is configured")
    return demo_config(), True


def _deployments(
    settings: Settings, config: RouterConfig, demo: bool
) -> dict[str, list[Deployment]]:
    credentials = _credentials(settings)
    result: dict[str, list[Deployment]] = {}
    problems = []
    for group in config.model_groups:
        items = []
        for index, spec in enumerate(group.deployments):
            declared = config.providers.get(spec.provider)
            kind = "demo" if demo else (declared.kind if declared else spec.provider)
            provider = PROVIDERS[kind]  # the config's validation admits only table kinds
            api_key: str | None = None
            api_base: str | None = None
            if declared is not None:
                api_base = declared.api_base
                if declared.api_key_env:
                    api_key = os.environ.get(declared.api_key_env) or None
                    if api_key is None and not PROVIDERS[declared.kind].self_hosted:
                        problems.append(f"{declared.api_key_env} (provider {spec.provider})")
            if kind in credentials:
                api_key = api_key or credentials[kind].api_key
                api_base = api_base or credentials[kind].api_base
            elif provider.key_variable and api_key is None:
                problems.append(f"{provider.key_variable} (used by model group {group.name!r})")
            api_base = api_base or provider.default_base
            options: dict[str, Any] = {}
            if kind == "openai" and settings.openai_max_tokens and spec.max_tokens is None:
                options["max_tokens"] = settings.openai_max_tokens
            items.append(
                Deployment(
                    id=f"{group.name}/{spec.provider}/{spec.model}#{index}",
                    group=group.name,
                    kind=kind,
                    model=spec.model,
                    api_base=api_base.rstrip("/") if api_base else None,
                    api_key=api_key,
                    weight=spec.weight,
                    timeout=(
                        settings.openai_timeout_seconds
                        if kind == "openai" and "timeout_seconds" not in spec.model_fields_set
                        else spec.timeout_seconds
                    ),
                    rpm=spec.rpm,
                    tpm=spec.tpm,
                    max_tokens=spec.max_tokens or options.get("max_tokens"),
                    transport=(declared.transport if declared and not demo else provider.transport),
                    defaults=(
                        {"temperature": settings.openai_temperature}
                        if kind == "openai" and settings.openai_temperature is not None
                        else {}
                    ),
                )
            )
        result[group.name] = items
    if problems:
        raise ConfigurationError(
            "LLM providers are missing their keys; set: " + ", ".join(sorted(set(problems)))
        )
    return result


def build_router(settings: Settings, *, tracer: Tracer | None = None) -> tuple[Router, bool]:
    """(router, is_demo). Imports litellm only if a deployment needs it. With a
    `tracer` (tracing on), each provider call is a span (`core.llm.traced`)."""
    config, demo = router_config(settings)
    deployments = _deployments(settings, config, demo)
    everything = [d for items in deployments.values() for d in items]
    redactor.add_secrets(d.api_key for d in everything if d.api_key)  # api_key_env keys too
    providers: dict[str, Provider] = {"direct": DirectProvider(), "demo": DemoProvider()}
    for transport in sorted({d.transport for d in everything} & NATIVE.keys()):
        providers[transport] = NATIVE[transport]()
    if any(d.transport == "litellm" for d in everything):
        litellm_module()  # pay the import at start, not on a client's first request
        providers["litellm"] = LiteLLMProvider()
    if tracer is not None:
        providers = {name: TracedProvider(p, tracer) for name, p in providers.items()}
    costs = CostTable.load({(d.kind, d.model) for d in everything if d.kind != "demo"})
    if demo:
        log.warning(
            "demo_model_only",
            detail="no LLM provider configured; serving the "
            "offline 'demo' model (development only)",
        )
    return Router(config, deployments, providers, costs), demo


def litellm_models(settings: Settings) -> set[tuple[str, str]]:
    """(litellm provider, model) of every deployment litellm translates: what the
    gunicorn master loads before it forks (`litellm_import.preload_litellm`).
    Resolves kinds as `_deployments` does, without its key checks (the workers
    report a missing key)."""
    config, demo = router_config(settings)
    if demo:
        return set()
    models = set()
    for group in config.model_groups:
        for spec in group.deployments:
            declared = config.providers.get(spec.provider)
            if declared is not None and declared.transport == "litellm":
                models.add((PROVIDERS[declared.kind].litellm_prefix, spec.model))
    return models
