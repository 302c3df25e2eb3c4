"""The provider table: everything Skygate knows about each LLM provider, in one place.

One frozen `ProviderSpec` per kind. Settings (which fields hold a provider's key and
base URL), the router schema (which kinds exist, which a deployment may name
directly), the environment defaults (the model group a key alone enables), the
factory (the variable a missing key names, the default base URL, the transport) and
the cost table (litellm's key prefix) all read it; none keeps its own list.

Adding a provider is one entry here, plus its `<kind>_api_key`/`<kind>_api_base`
fields in `core.config.Settings` (declared, so that mypy and a reader see every
setting in one class; a missing one fails at import, as its validators name it) and
their rows in README's environment table. tests/core/llm/test_providers.py checks
that the three agree.

This module imports nothing from Skygate: `core.config` reads it while its class is
being defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

Transport = Literal["direct", "litellm", "cohere", "anthropic", "gemini", "demo"]


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """What Skygate knows about one provider kind."""

    kind: str
    # How a call reaches it: `direct` speaks OpenAI's protocol over aiohttp (no litellm
    # import), `cohere`, `anthropic` and `gemini` their provider's own API over the same
    # machinery (`core.llm.cohere`, `core.llm.anthropic`, `core.llm.gemini`), `demo`
    # answers offline.
    transport: Transport
    # A provider declared with `translation: litellm` in the router config goes through
    # litellm's translation instead (`core.llm.litellm_provider`): the kinds whose
    # litellm path is tested (tests/providers).
    litellm_translates: bool = False
    # The Settings fields holding its key and base URL override; their env vars are the
    # upper-case names. None: it has no environment settings of its own.
    key_setting: str | None = None
    base_setting: str | None = None
    # The base URL used when neither the router config nor the settings give one.
    default_base: str | None = None
    # The model group served when only the provider's key is set (no ROUTER_CONFIG).
    # None: no default group (OpenAI's comes from OPENAI_MODEL / OPENAI_MODEL_FALLBACK).
    default_model: str | None = None
    # The prefix of its models in litellm's names and cost map (`gemini/gemini-2.5-flash`).
    litellm_prefix: str = ""
    # A server the operator runs (vLLM, Ollama, ...): it needs an `api_base`, its key is
    # optional, and a deployment reaches it only through a name under `providers:`.
    self_hosted: bool = False
    # Its `gen_ai.provider.name` in OpenTelemetry's GenAI conventions (the traces of
    # `core.llm.traced`), where the conventions name it differently; empty: the kind.
    otel_name: str = ""

    @property
    def trace_name(self) -> str:
        return self.otel_name or self.kind

    @property
    def key_variable(self) -> str | None:
        """The environment variable holding the key, named in configuration errors."""
        return self.key_setting.upper() if self.key_setting else None

    @property
    def base_variable(self) -> str | None:
        return self.base_setting.upper() if self.base_setting else None


_TABLE = (
    ProviderSpec(
        "openai",
        "direct",
        key_setting="openai_api_key",
        base_setting="openai_api_base",
        default_base="https://api.openai.com/v1",
    ),
    ProviderSpec(
        "anthropic",
        "anthropic",
        key_setting="anthropic_api_key",
        base_setting="anthropic_api_base",
        # The host: `core.llm.anthropic` adds `/v1/messages`.
        default_base="https://api.anthropic.com",
        default_model="claude-haiku-4-5",
        litellm_prefix="anthropic",
        litellm_translates=True,
    ),
    ProviderSpec(
        "google",
        "gemini",
        key_setting="google_ai_api_key",
        base_setting="google_ai_api_base",
        # The version root: `core.llm.gemini` adds `/models/{model}:{method}`.
        default_base="https://generativelanguage.googleapis.com/v1beta",
        default_model="gemini-2.5-flash",
        litellm_prefix="gemini",
        litellm_translates=True,
        otel_name="gcp.gemini",
    ),
    ProviderSpec(
        "groq",
        "direct",
        key_setting="groq_api_key",
        base_setting="groq_api_base",
        default_base="https://api.groq.com/openai/v1",
        default_model="openai/gpt-oss-120b",
        litellm_prefix="groq",
    ),
    ProviderSpec(
        "mistral",
        "direct",
        key_setting="mistral_api_key",
        base_setting="mistral_api_base",
        default_base="https://api.mistral.ai/v1",
        default_model="mistral-small-latest",
        litellm_prefix="mistral",
        otel_name="mistral_ai",
    ),
    ProviderSpec(
        "cohere",
        "cohere",
        key_setting="cohere_api_key",
        base_setting="cohere_api_base",
        # The host: `core.llm.cohere` adds `/v2/chat` and `/v2/embed`.
        default_base="https://api.cohere.com",
        default_model="command-r-08-2024",
        # Only the cost map reads it: Cohere's chat models are listed there bare
        # (`command-r-08-2024`), its newer embedding models as `cohere/embed-v4.0`.
        litellm_prefix="cohere",
    ),
    ProviderSpec("openai_compatible", "direct", self_hosted=True),
    # Never named in a config: the factory puts it behind every group in development
    # when no provider is configured (and Settings refuses production without one).
    ProviderSpec("demo", "demo"),
)

# Kind -> spec, in the order above (which is also the order of the default groups).
PROVIDERS: dict[str, ProviderSpec] = {spec.kind: spec for spec in _TABLE}

# Kinds a router config may name (`kind:` under `providers:`): all but the demo.
PROVIDER_KINDS: tuple[str, ...] = tuple(s.kind for s in _TABLE if s.transport != "demo")
# Kinds a deployment may name directly: a self-hosted server needs its `api_base`, so it
# is usable only through a name declared under `providers:`.
BUILTIN_PROVIDERS: tuple[str, ...] = tuple(
    kind for kind in PROVIDER_KINDS if not PROVIDERS[kind].self_hosted
)
# The group a provider's key alone enables, for the kinds that have one.
DEFAULT_MODELS: dict[str, str] = {s.kind: s.default_model for s in _TABLE if s.default_model}
# Settings field names, for Settings' own validators and for redaction.
KEY_SETTINGS: tuple[str, ...] = tuple(s.key_setting for s in _TABLE if s.key_setting)
BASE_SETTINGS: tuple[str, ...] = tuple(s.base_setting for s in _TABLE if s.base_setting)

if TYPE_CHECKING:
    ProviderKind = str
else:
    # Built from the table so pydantic checks `kind:` against it (and lists the kinds
    # in its message); mypy sees a plain str.
    ProviderKind = Literal[PROVIDER_KINDS]
