"""The router's configuration: its schema, loading it, and the default built from keys.

A router config names the public model groups clients may ask for, the provider
deployments behind each, the fallbacks between groups, and the retry, cooldown and
routing policy. It comes from a YAML file (`ROUTER_CONFIG`), where every mistake is
reported as `file:line: dotted.field: message`, or, with no file, from the provider
keys in the environment (`config_from_providers`). The config never holds secrets:
a provider names the env var holding its key, never the key itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError

ProviderKind = Literal[
    "openai", "anthropic", "google", "groq", "mistral", "cohere", "openai_compatible"
]
PROVIDER_KINDS: tuple[str, ...] = get_args(ProviderKind)
# Kinds a deployment may name directly; `openai_compatible` needs an `api_base`,
# so it is only usable through a name declared under `providers:`.
BUILTIN_PROVIDERS: tuple[str, ...] = tuple(k for k in PROVIDER_KINDS if k != "openai_compatible")

GROUP_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
PROVIDER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ENV_VAR_PATTERN = r"^[A-Z_][A-Z0-9_]*$"

GroupName = Annotated[str, StringConstraints(pattern=GROUP_NAME_PATTERN)]
ProviderName = Annotated[str, StringConstraints(pattern=PROVIDER_NAME_PATTERN)]

Loc = tuple[str | int, ...]


class RouterConfigError(ValueError):
    """The router config is unusable. `problems` holds one line per mistake, each
    `path:line: dotted.field: message` when it came from a file."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def _error(loc: Loc, kind: str, template: str, value: object, **ctx: str) -> InitErrorDetails:
    """One validation error at `loc`. User values go in `ctx`, never in `template`."""
    return InitErrorDetails(type=PydanticCustomError(kind, template, ctx), loc=loc, input=value)


def _fail(title: str, errors: list[InitErrorDetails]) -> NoReturn:
    # A ValidationError raised in a validator keeps its locations (relative to the
    # model being validated), so the loader can point at the offending line.
    raise ValidationError.from_exception_data(title, errors)


def _not_empty(items: tuple[Any, ...]) -> None:
    # Checked after the items validate: `Field(min_length=1)` on a tuple would also
    # report "too short" whenever an item fails, which misleads.
    if not items:
        raise PydanticKnownError(
            "too_short", {"field_type": "List", "min_length": 1, "actual_length": 0}
        )


def _none_is_empty(value: object, empty: object) -> object:
    """`key:` with every entry commented out parses as null; treat it as empty."""
    return empty if value is None else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- schema --------------------------------------------------------------------
class RoutingConfig(_Strict):
    """How a deployment is picked within a group."""

    strategy: Literal["weighted", "latency"] = "weighted"


class RetryConfig(_Strict):
    """Extra attempts on the same group, with exponential backoff and jitter."""

    attempts: int = Field(default=2, ge=0, le=10)
    backoff_seconds: float = Field(default=0.25, ge=0, le=30)
    max_backoff_seconds: float = Field(default=4.0, ge=0, le=300)
    honour_retry_after: bool = True
    max_retry_after_seconds: float = Field(default=10.0, ge=0, le=600)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryConfig:
        if self.max_backoff_seconds < self.backoff_seconds:
            _fail(
                "RetryConfig",
                [
                    _error(
                        ("max_backoff_seconds",),
                        "backoff_cap",
                        "must be >= backoff_seconds ({base})",
                        self.max_backoff_seconds,
                        base=f"{self.backoff_seconds:g}",
                    )
                ],
            )
        return self


class CooldownConfig(_Strict):
    """Per-deployment circuit breaker: open after `failures`, probe after `seconds`."""

    failures: int = Field(default=3, ge=1, le=100)
    seconds: float = Field(default=30.0, ge=0.1, le=3600)


class ProviderConfig(_Strict):
    """A self-hosted OpenAI-compatible server, or an override of a built-in kind."""

    kind: ProviderKind
    api_base: str | None = None
    api_key_env: Annotated[str, StringConstraints(pattern=ENV_VAR_PATTERN)] | None = None

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
    def _compatible_needs_base(self) -> ProviderConfig:
        if self.kind == "openai_compatible" and self.api_base is None:
            _fail(
                "ProviderConfig",
                [_error(("api_base",), "missing", "required for kind openai_compatible", None)],
            )
        return self


class DeploymentConfig(_Strict):
    """One provider model behind a group."""

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    max_tokens: int | None = Field(default=None, gt=0)


class ModelGroup(_Strict):
    """A public model name (plus aliases) and the deployments that serve it."""

    name: GroupName
    aliases: tuple[GroupName, ...] = ()
    description: str | None = None
    deployments: tuple[DeploymentConfig, ...]

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases_none(cls, value: object) -> object:
        return _none_is_empty(value, ())

    @field_validator("deployments")
    @classmethod
    def _has_deployments(cls, value: tuple[DeploymentConfig, ...]) -> tuple[DeploymentConfig, ...]:
        _not_empty(value)
        return value

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)


class RouterConfig(_Strict):
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
        return _none_is_empty(value, {})

    @field_validator("model_groups")
    @classmethod
    def _has_groups(cls, value: tuple[ModelGroup, ...]) -> tuple[ModelGroup, ...]:
        _not_empty(value)
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> RouterConfig:
        errors = [*self._name_errors(), *self._provider_errors(), *self._fallback_errors()]
        if errors:
            _fail("RouterConfig", errors)
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
                    yield _error(
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
                    yield _error(
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
                    yield _error(loc, "self_fallback", "a group cannot fall back to itself", target)
                else:
                    yield from self._not_a_group(loc, target)

    def _not_a_group(self, loc: Loc, name: str) -> Iterator[InitErrorDetails]:
        group = self.resolve(name)
        if group is None:
            yield _error(loc, "unknown_group", "unknown model group {name}", name, name=repr(name))
        elif group.name != name:
            yield _error(
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
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RouterConfigError([f"{shown}: router config file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RouterConfigError([f"{shown}: cannot read router config: {reason}"]) from None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        problems = _duplicate_keys(shown, root) if root is not None else []
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise RouterConfigError([_yaml_problem(shown, exc)]) from None
    except yaml.YAMLError as exc:
        raise RouterConfigError([f"{shown}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()

    if root is None:
        raise RouterConfigError([f"{shown}: file is empty; expected a mapping with model_groups"])
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        found = type(data).__name__
        line = root.start_mark.line + 1
        raise RouterConfigError(
            [f"{shown}:{line}: top level must be a mapping with model_groups, not a {found}"]
        )

    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        problems += [_validation_problem(shown, root, error) for error in exc.errors()]
        config = None
    if problems:
        raise RouterConfigError(sorted(problems, key=_problem_line))
    assert config is not None
    return config


def _yaml_problem(shown: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown}:{mark.line + 1}" if mark is not None else shown
    detail = exc.problem or "syntax error"
    if exc.context:
        context_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        detail += f" ({exc.context}{context_line})"
    return f"{where}: invalid YAML: {detail}"


def _validation_problem(shown: str, root: yaml.Node, error: Mapping[str, Any]) -> str:
    loc: Loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if error.get("type") == "tuple_type":
        message = "Input should be a list"
    elif error.get("type") == "extra_forbidden":
        message = "unknown field (check the spelling)"
    field = ".".join(str(step) for step in loc)
    line = _line_of(root, loc)
    return f"{shown}:{line}: {field}: {message}" if field else f"{shown}:{line}: {message}"


def _problem_line(problem: str) -> int:
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


def _mapping_entry(node: yaml.MappingNode, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key, value) nodes for `step`; the last one wins, as in the parsed data."""
    found = None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == str(step):
            found = (key, value)
    return found


def _line_of(root: yaml.Node, loc: Loc) -> int:
    """The 1-based line an error at `loc` refers to: walk the node tree along the
    location as far as it goes. A value in a mapping reports its key's line (so a
    block list or mapping is reported where it is named); a missing field reports
    the line where its parent mapping starts."""
    node, at = root, root
    for step in loc:
        if step == "[key]":
            break  # a bad mapping key: `at` is already that key
        if isinstance(node, yaml.MappingNode):
            entry = _mapping_entry(node, step)
            if entry is None:
                at = node
                break
            at, node = entry
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(node.value):
                break
            node = at = node.value[step]
        else:
            break
    return at.start_mark.line + 1


def _duplicate_keys(shown: str, root: yaml.Node) -> list[str]:
    """PyYAML silently keeps the last of two equal keys; in a config that hides a
    typo or a pasted block, so each repeat is a problem."""
    problems: list[str] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: Loc) -> None:
        if id(node) in seen_nodes:  # anchors and aliases share nodes
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                field = ".".join(str(p) for p in (*path, key.value))
                if key.value in keys:
                    problems.append(
                        f"{shown}:{line}: {field}: duplicate key (first at line {keys[key.value]})"
                    )
                else:
                    keys[key.value] = line
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return problems


# -- building from environment-style provider settings ---------------------------
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
    defaults: Mapping[str, str],
) -> RouterConfig | None:
    """The config used when no `ROUTER_CONFIG` file is given: one group per provider
    with a key, in the mapping's order. OpenAI serves `openai_model`, falling back to
    `openai_model_fallback` when that is set and different; every other kind serves
    `defaults[kind]` (kinds without a default are skipped). None when no provider
    has a key."""
    groups: dict[str, list[dict[str, str]]] = {}
    fallbacks: dict[str, list[str]] = {}

    def add(name: str, kind: str) -> None:
        deployments = groups.setdefault(name, [])
        if {"provider": kind, "model": name} not in deployments:
            deployments.append({"provider": kind, "model": name})

    for credentials in providers.values():
        if not (credentials.api_key or "").strip():
            continue
        if credentials.kind == "openai":
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
