"""The router's configuration: its schema, and loading it from a YAML file.

A router config names the public model groups clients may ask for, the provider
deployments behind each, the fallbacks between groups, and the retry, cooldown and
routing policy. It comes from a YAML file (`ROUTER_CONFIG`), where every mistake is
reported as `file:line: dotted.field: message` (`core.yaml_models`), or, with no
file, from the provider keys in the environment (`core.llm.defaults`). The config
never holds secrets: a provider names the env var holding its key, never the key
itself. Which provider kinds exist is `core.llm.providers`' table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, StringConstraints, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.llm.providers import BUILTIN_PROVIDERS, PROVIDERS, ProviderKind, Transport
from core.yaml_models import (
    Loc,
    StrictModel,
    YamlModelError,
    field_error,
    load_yaml_model,
    none_as,
    raise_field_errors,
    require_items,
)

GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
PROVIDER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ENV_VAR_PATTERN = r"^[A-Z_][A-Z0-9_]*$"

GroupName = Annotated[str, StringConstraints(pattern=GROUP_NAME_PATTERN)]
ProviderName = Annotated[str, StringConstraints(pattern=PROVIDER_NAME_PATTERN)]


class RouterConfigError(YamlModelError):
    """The router config is unusable. `problems` holds one line per mistake, each
    `path:line: dotted.field: message` when it came from a file."""


# -- schema --------------------------------------------------------------------
class RoutingConfig(StrictModel):
    """How a deployment is picked within a group."""

    strategy: Literal["weighted", "latency"] = "weighted"


class RetryConfig(StrictModel):
    """Extra attempts on the same group, with exponential backoff and jitter."""

    attempts: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.25, ge=0, le=30)
    max_backoff_seconds: float = Field(default=4.0, ge=0, le=300)
    honour_retry_after: bool = True
    max_retry_after_seconds: float = Field(default=10.0, ge=0, le=600)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryConfig:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise_field_errors(
                "RetryConfig",
                [
                    field_error(
                        ("max_backoff_seconds",),
                        "backoff_cap",
                        "must be >= backoff_seconds ({base})",
                        self.max_backoff_seconds,
                        base=f"{self.backoff_seconds:g}",
                    )
                ],
            )
        return self


class CooldownConfig(StrictModel):
    """Per-deployment circuit breaker: open after `failures`, probe after `seconds`."""

    failures: int = Field(default=3, ge=1, le=100)
    seconds: float = Field(default=30.0, ge=0.1, le=3600)


class ProviderConfig(StrictModel):
    """A self-hosted OpenAI-compatible server, or an override of a built-in kind."""

    kind: ProviderKind
    api_base: str | None = None
    api_key_env: Annotated[str, StringConstraints(pattern=ENV_VAR_PATTERN)] | None = None
    # `litellm`: litellm's translation instead of Skygate's own (Anthropic, Gemini).
    translation: Literal["native", "litellm"] = "native"

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value.strip())
            ok = parts.scheme in {"http", "https"} and bool(parts.hostname)
        except ValueError:  # e.g. a malformed IPv6 host or port
            ok = False
        if not ok:
            raise PydanticCustomError(
                "api_base",
                "must be an http:// or https:// URL with a host, like {example}",
                {"example": "http://127.0.0.1:8001/v1"},
            )
        return value.strip()

    @model_validator(mode="after")
    def _self_hosted_needs_base(self) -> ProviderConfig:
        if PROVIDERS[self.kind].self_hosted and self.api_base is None:
            raise_field_errors(
                "ProviderConfig",
                [
                    field_error(
                        ("api_base",), "missing", "required for kind {kind}", None, kind=self.kind
                    )
                ],
            )
        if self.translation == "litellm" and not PROVIDERS[self.kind].litellm_translates:
            kinds = ", ".join(k for k, spec in PROVIDERS.items() if spec.litellm_translates)
            raise_field_errors(
                "ProviderConfig",
                [
                    field_error(
                        ("translation",),
                        "translation",
                        "litellm translates only kinds {kinds}, not {kind}",
                        "litellm",
                        kinds=kinds,
                        kind=self.kind,
                    )
                ],
            )
        return self

    @property
    def transport(self) -> Transport:
        """How its deployments are called (`core.llm.providers.ProviderSpec.transport`)."""
        return "litellm" if self.translation == "litellm" else PROVIDERS[self.kind].transport


class DeploymentConfig(StrictModel):
    """One provider model behind a group."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    max_tokens: int | None = Field(default=None, gt=0)


class ModelGroup(StrictModel):
    """A public model name (plus aliases) and the deployments that serve it."""

    name: GroupName
    aliases: tuple[GroupName, ...] = ()
    description: str | None = None
    deployments: tuple[DeploymentConfig, ...]

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases_none(cls, value: object) -> object:
        return none_as(value, ())

    @field_validator("deployments")
    @classmethod
    def _has_deployments(cls, value: tuple[DeploymentConfig, ...]) -> tuple[DeploymentConfig, ...]:
        require_items(value)
        return value

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)


class RouterConfig(StrictModel):
    """The whole router configuration."""

    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    providers: dict[ProviderName, ProviderConfig] = Field(default_factory=dict)
    model_groups: tuple[ModelGroup, ...]
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    _index: dict[str, ModelGroup] = PrivateAttr(default_factory=dict)

    @field_validator("routing", "retry", "cooldown", "providers", "fallbacks", mode="before")
    @classmethod
    def _section_none(cls, value: object) -> object:
        return none_as(value, {})

    @field_validator("model_groups")
    @classmethod
    def _has_groups(cls, value: tuple[ModelGroup, ...]) -> tuple[ModelGroup, ...]:
        require_items(value)
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> RouterConfig:
        errors = [*self._name_errors(), *self._provider_errors(), *self._fallback_errors()]
        if errors:
            raise_field_errors("RouterConfig", errors)
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Runs before `_cross_references`, which uses `resolve`. On a duplicate name
        # the first group wins (and validation fails anyway).
        for group in self.model_groups:
            for name in group.names:
                self._index.setdefault(name, group)

    def _name_errors(self) -> Iterator[InitErrorDetails]:
        seen: dict[str, str] = {}
        for i, group in enumerate(self.model_groups):
            where: list[tuple[Loc, str]] = [(("model_groups", i, "name"), group.name)]
            where += [(("model_groups", i, "aliases", k), a) for k, a in enumerate(group.aliases)]
            for loc, name in where:
                if name in seen:
                    yield field_error(
                        loc,
                        "duplicate_name",
                        "{name} is already used by {other}",
                        name,
                        name=repr(name),
                        other=seen[name],
                    )
                else:
                    seen[name] = ".".join(str(p) for p in loc)

    def _provider_errors(self) -> Iterator[InitErrorDetails]:
        known = ", ".join(BUILTIN_PROVIDERS)
        for i, group in enumerate(self.model_groups):
            for j, deployment in enumerate(group.deployments):
                if self.provider_for(deployment.provider) is None:
                    yield field_error(
                        ("model_groups", i, "deployments", j, "provider"),
                        "unknown_provider",
                        "unknown provider {provider}; expected one of {known} "
                        "or a name declared under providers:",
                        deployment.provider,
                        provider=repr(deployment.provider),
                        known=known,
                    )

    def _fallback_errors(self) -> Iterator[InitErrorDetails]:
        for source, targets in self.fallbacks.items():
            yield from self._not_a_group(("fallbacks", source), source)
            for k, target in enumerate(targets):
                loc = ("fallbacks", source, k)
                if target == source:
                    yield field_error(
                        loc, "self_fallback", "a group cannot fall back to itself", target
                    )
                else:
                    yield from self._not_a_group(loc, target)

    def _not_a_group(self, loc: Loc, name: str) -> Iterator[InitErrorDetails]:
        group = self.resolve(name)
        if group is None:
            yield field_error(
                loc, "unknown_group", "unknown model group {name}", name, name=repr(name)
            )
        elif group.name != name:
            yield field_error(
                loc,
                "fallback_alias",
                "{name} is an alias; fallbacks use group names ({group})",
                name,
                name=repr(name),
                group=repr(group.name),
            )

    # -- lookups -------------------------------------------------------------
    def resolve(self, name: str) -> ModelGroup | None:
        """The group a client-supplied model name (group name or alias) refers to."""
        return self._index.get(name)

    def public_names(self) -> list[str]:
        """Group names in file order (aliases are accepted but not listed)."""
        return [group.name for group in self.model_groups]

    def fallback_chain(self, group_name: str) -> list[str]:
        """The group, then its fallbacks in order, expanded breadth-first without
        repeats. Accepts an alias; an unknown name gives an empty chain."""
        group = self.resolve(group_name)
        if group is None:
            return []
        chain = [group.name]
        position = 0
        while position < len(chain):  # `chain` doubles as the breadth-first queue
            for target in self.fallbacks.get(chain[position], ()):
                if target not in chain:
                    chain.append(target)
            position += 1
        return chain

    def provider_for(self, name: str) -> ProviderConfig | None:
        """What a deployment's `provider` means: a declared provider (which may
        override a built-in kind), a built-in kind, or None when unknown."""
        if name in self.providers:
            return self.providers[name]
        if name in BUILTIN_PROVIDERS:
            return ProviderConfig(kind=name)
        return None


# -- loading from YAML -----------------------------------------------------------
def load_router_config(path: str | Path) -> RouterConfig:
    """Read, parse and validate a router YAML file, or raise `RouterConfigError`
    listing every problem as `path:line: dotted.field: message`."""
    try:
        return load_yaml_model(
            path, RouterConfig, what="router config", expected="a mapping with model_groups"
        )
    except YamlModelError as exc:
        raise RouterConfigError(exc.problems) from None
