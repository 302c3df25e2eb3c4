"""The shapes of the success and error bodies Skygate documents (`api.openapi` puts
them in the OpenAPI document; routes name them in their decorators). Gateway-owned
shapes refuse unknown fields (a new field, or a leaked one, is a visible change);
OpenAI-shaped answers allow them, as OpenAI's own schema does."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class GatewayBody(BaseModel):
    """A shape Skygate owns: unknown fields are a change of contract."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _OpenAI(BaseModel):
    """An OpenAI shape: providers add fields (system_fingerprint, service_tier, ...)."""

    model_config = ConfigDict(extra="allow", strict=True)


class ErrorObject(GatewayBody):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(GatewayBody):
    """Every error, from any route or middleware (`core.errors`)."""

    error: ErrorObject
    request_id: str | None = None


class CompletionUsage(_OpenAI):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessage(_OpenAI):
    role: Literal["assistant"]
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(_OpenAI):
    index: int
    message: ChatMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(_OpenAI):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage | None = None


class ChunkDelta(_OpenAI):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(_OpenAI):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_OpenAI):
    """One `data:` event of a streamed chat completion (then `data: [DONE]`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class Embedding(_OpenAI):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: encoding_format=base64


class EmbeddingUsage(_OpenAI):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_OpenAI):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelObject(_OpenAI):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_OpenAI):
    object: Literal["list"]
    data: list[ModelObject]


class ApiKeyObject(GatewayBody):
    id: str
    object: Literal["api_key"]
    name: str
    tenant: str
    prefix: str
    state: Literal["active", "disabled", "revoked", "expired"]
    allowed_models: list[str] | None
    rpm_limit: int | None
    rph_limit: int | None
    tpm_limit: int | None
    monthly_budget_usd: float | None
    expires_at: str | None
    created_at: str | None


class ApiKeyCreated(ApiKeyObject):
    key: str  # shown once


class ApiKeyRevoked(ApiKeyObject):
    deleted: Literal[True]


class ApiKeyList(GatewayBody):
    object: Literal["list"]
    data: list[ApiKeyObject]


class UsageRow(GatewayBody):
    date: str
    model: str
    tenant: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cache_hits: int
    estimated: int  # requests whose tokens are the gateway's estimate, not the provider's


class UsageTotals(GatewayBody):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageReport(GatewayBody):
    object: Literal["usage"]
    start: str
    end: str
    data: list[UsageRow]
    totals: UsageTotals


class Token(GatewayBody):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    expires_at: int


class Root(GatewayBody):
    name: str
    description: str
    version: str
    environment: str
    endpoints: dict[str, str | None]


class Live(GatewayBody):
    alive: Literal[True]


class Ready(GatewayBody):
    ready: bool
    reasons: list[str] | None = None


class AgentCounts(GatewayBody):
    total: int
    active: int
    runs_active: int


class Traffic(GatewayBody):
    """The instance's API traffic over the last `window_seconds` (all its workers)."""

    scope: Literal["instance"]
    window_seconds: float
    requests_per_second: float | None
    client_errors_per_second: float | None
    server_errors_per_second: float | None
    error_ratio: float | None = Field(description="5xx answers / API requests.")
    cache_hit_ratio: float | None


class Health(GatewayBody):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    environment: str
    uptime_seconds: float
    agents: AgentCounts
    services: dict[str, dict[str, Any]]
    traffic: Traffic | None = Field(
        default=None, description="Operators only; null when metrics are off."
    )


class CacheStats(GatewayBody):
    enabled: bool
    backend: str
    redis_state: str
    hit_rate: float
    total_hits: int
    total_misses: int
    connection_pool_size: int | None
    local_entries: int
    ttl_seconds: float
