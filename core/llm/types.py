"""Shared shapes of the router: deployments, upstream answers, upstream failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.llm.providers import Transport

# What went wrong, by cause (`core.llm.failures` maps each to what a client sees):
#   timeout, connect   no answer in time / no connection: the upstream's health
#   status             the upstream answered an HTTP error (`status`); who caused it
#                      depends on the code, see `CLIENT_FAULT_STATUS`
#   garbage, cut       the upstream answered something unusable, or stopped midway
#   local              Skygate's own side of the call failed (an ImportError, a
#                      translation bug): nothing the upstream did, never its health
FailureKind = Literal["timeout", "connect", "status", "garbage", "cut", "local"]
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
# Statuses the request itself earned: too long, malformed, unprocessable. 401, 403
# and 404 are not among them: the key, the model name and the URL are the
# deployment's (nothing a client sends chooses them), so those mean the operator's
# configuration is wrong; the client gets a 502 and another deployment may serve.
CLIENT_FAULT_STATUS = frozenset({400, 413, 422})


class ProviderError(Exception):
    """An upstream call failed. Carries what the router needs to decide what next."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Worth another attempt on the same deployment (rate limits, 5xx, timeouts,
        garbage); a refused key or model would only be refused again."""
        if self.kind == "local":
            return False
        if self.kind != "status":
            return True
        return self.status is not None and (self.status in RETRYABLE_STATUS or self.status >= 500)

    @property
    def client_fault(self) -> bool:
        """The request itself is bad (e.g. context too long): no retry, tell the client."""
        return self.kind == "status" and self.status in CLIENT_FAULT_STATUS


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Any) -> Usage:
        if not isinstance(usage, dict):
            return cls()
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        return cls(
            int(prompt) if isinstance(prompt, int) else 0,
            int(completion) if isinstance(completion, int) else 0,
        )


@dataclass(slots=True)
class Completion:
    """A finished, OpenAI-shaped answer (chat completion or embeddings list)."""

    body: bytes
    data: dict[str, Any]
    usage: Usage


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed event: the SSE `data:` payload bytes and the parsed chunk."""

    payload: bytes
    data: dict[str, Any]


@dataclass(slots=True)
class Deployment:
    """One provider model behind a public model group, with its live state."""

    id: str
    group: str
    kind: str
    model: str
    api_base: str | None
    api_key: str | None = field(repr=False)
    weight: float = 1.0
    timeout: float = 60.0
    rpm: int | None = None
    tpm: int | None = None
    max_tokens: int | None = None
    # Which provider object serves it (`core.llm.providers`); the router resolves it
    # once, when it is built.
    transport: Transport = "direct"
    defaults: dict[str, Any] = field(default_factory=dict)
    latency_ewma: float | None = None

    def observe_latency(self, seconds: float) -> None:
        self.latency_ewma = (
            seconds if self.latency_ewma is None else 0.8 * self.latency_ewma + 0.2 * seconds
        )


class Provider(Protocol):
    """How the router talks to one family of upstreams."""

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion: ...

    def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion: ...

    async def close(self) -> None: ...
