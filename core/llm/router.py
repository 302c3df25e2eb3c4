"""The router: public model groups -> deployments, with retries, cooldowns,
load balancing and fallbacks between groups.

For one request the router walks the group's fallback chain. Within a group it
makes up to `1 + retry.attempts` attempts, each on a deployment picked by
weight (or by observed latency) among those whose circuit is closed and that
are under their rpm/tpm caps, never the same deployment twice while another is
left. Between attempts it backs off exponentially with jitter, or waits the
upstream's `Retry-After` when that is short enough. Streams are retried and
fall back only until their first chunk has arrived.

Failures by cause (`ProviderError.kind`):
- a request error the client caused (upstream 400, 413, 422) ends the walk at
  once and says nothing about the deployment's health;
- a failure on Skygate's side of the call (an exception that is not a
  `ProviderError`, or one classified `local`: an ImportError, a translation bug)
  ends the walk too, is logged here once with its traceback, and is never held
  against the deployment;
- a refusal a retry would meet again (401, 403, 404: a key, model or URL the
  operator configured) moves on to another deployment at once and is not held
  against the deployment's health either;
- anything else (no connection, timeouts, 429s, 5xx, an unusable or cut answer)
  is one failure against the deployment's breaker.

Cooldown (`CircuitBreaker`, per deployment, per worker process):
- the retries of one request count as one failure against a deployment, so the
  threshold means "this many requests failed", not "one request retried";
- the breaker opens only while another deployment of its group's chain (the
  group and its fallbacks) is still in service. The last one is held in service
  instead: every request still reaches it and gets the upstream's real error,
  with one attempt and no retries (fail fast); that traffic is its probe, and the
  first success clears it. Cooldown alone never turns a group into 503s.
- A 429's Retry-After does not pause a deployment beyond that: a short one is
  waited out by the retry, a long one is passed to the client with the 429 (the
  upstream's own answer, which SDKs honour), and a multi-deployment group cools
  the limited deployment down like any other failure.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from core.infra.breaker import CircuitBreaker
from core.llm.config import RouterConfig
from core.llm.costs import CostTable
from core.llm.types import Chunk, Completion, Deployment, Provider, ProviderError
from core.observability import metrics

log = structlog.get_logger("skygate.router")


class NoDeploymentAvailable(Exception):
    """Every deployment of every group in the chain is cooling down or capped."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("no deployment available")
        self.retry_after = retry_after


def local_failure(deployment: Deployment, exc: BaseException) -> ProviderError:
    """A failure on Skygate's side of a provider call (`exc`: any exception from the
    provider's code, or a `ProviderError` already classified `local`), as that
    `local` error, logged here with its traceback: the one log line for it, since
    the client only gets a bare 500 `internal_error`. Used by the walk, and by
    whoever reads the rest of a stream (`core.gateway.streams.pump`)."""
    if isinstance(exc, ProviderError) and exc.kind == "local":
        error = exc
    else:
        error = ProviderError("local", f"{deployment.id}: {type(exc).__name__}")
        error.__cause__ = exc
    log.error("provider_failed_locally", deployment=deployment.id, exc_info=error)
    return error


@dataclass(slots=True)
class _Window:
    """Requests and tokens in the current minute, for rpm/tpm caps (per worker)."""

    minute: int = 0
    requests: int = 0
    tokens: int = 0

    def roll(self) -> None:
        now = int(time.monotonic() // 60)
        if now != self.minute:
            self.minute, self.requests, self.tokens = now, 0, 0


@dataclass(slots=True)
class _Live:
    deployment: Deployment
    # Resolved from `deployment.transport` when the router is built, so an attempt
    # reads an attribute instead of choosing a provider.
    provider: Provider
    breaker: CircuitBreaker
    window: _Window = field(default_factory=_Window)

    def under_caps(self) -> bool:
        self.window.roll()
        d = self.deployment
        if d.rpm is not None and self.window.requests >= d.rpm:
            return False
        return not (d.tpm is not None and self.window.tokens >= d.tpm)


@dataclass(slots=True)
class StreamHandle:
    """A stream whose first chunk has arrived; the rest follows from `rest`."""

    deployment: Deployment
    first: Chunk
    rest: AsyncIterator[Chunk]
    fallback_from: str | None = None


class Router:
    def __init__(
        self,
        config: RouterConfig,
        deployments: Mapping[str, list[Deployment]],
        providers: Mapping[str, Provider],
        costs: CostTable,
    ) -> None:
        self.config = config
        self.providers = providers
        self.costs = costs
        self._live: dict[str, list[_Live]] = {}
        for group, items in deployments.items():
            self._live[group] = [self._make_live(d) for d in items]

    def _make_live(self, deployment: Deployment) -> _Live:
        def changed(ok: bool, error: BaseException | None) -> None:
            cooling = 0 if breaker.is_closed else 1
            metrics.LLM_DEPLOYMENT_COOLDOWN.labels(deployment.group, deployment.id).set(cooling)
            if ok:
                log.warning("deployment_recovered", deployment=deployment.id)
            elif breaker.is_closed:  # held: the last one in service for its group
                log.warning(
                    "deployment_failing_kept_in_service",
                    deployment=deployment.id,
                    failures=breaker.failures,
                    error=str(error)[:200],
                )
            else:
                log.warning(
                    "deployment_cooling_down",
                    deployment=deployment.id,
                    seconds=self.config.cooldown.seconds,
                    error=str(error)[:200],
                )

        breaker = CircuitBreaker(
            threshold=self.config.cooldown.failures,
            retry_after=self.config.cooldown.seconds,
            on_change=changed,
        )
        metrics.LLM_DEPLOYMENT_COOLDOWN.labels(deployment.group, deployment.id).set(0)
        return _Live(deployment, self.providers[deployment.transport], breaker)

    # -- lookup --------------------------------------------------------------
    def resolve(self, name: str) -> str | None:
        group = self.config.resolve(name)
        return group.name if group is not None else None

    def public_names(self) -> list[str]:
        return self.config.public_names()

    def deployments(self, group: str) -> list[Deployment]:
        return [live.deployment for live in self._live.get(group, [])]

    def all_deployments(self) -> list[Deployment]:
        return [live.deployment for items in self._live.values() for live in items]

    def cooling_down(self) -> list[str]:
        return [
            live.deployment.id
            for items in self._live.values()
            for live in items
            if not live.breaker.is_closed
        ]

    def cost(self, deployment: Deployment, prompt_tokens: int, completion_tokens: int) -> float:
        return self.costs.cost(deployment.kind, deployment.model, prompt_tokens, completion_tokens)

    # -- selection -------------------------------------------------------------
    def _candidates(self, group: str, excluded: set[str]) -> list[_Live]:
        return [
            live
            for live in self._live.get(group, [])
            if live.deployment.id not in excluded and live.breaker.available() and live.under_caps()
        ]

    def _pick(self, group: str, excluded: set[str]) -> _Live | None:
        candidates = self._candidates(group, excluded)
        if not candidates:
            return None
        if self.config.routing.strategy == "latency" and len(candidates) > 1:
            # Unmeasured deployments go first (exploration), then the fastest.
            chosen = min(
                candidates,
                key=lambda live: (live.deployment.latency_ewma or 0.0, -live.deployment.weight),
            )
        elif len(candidates) == 1:
            chosen = candidates[0]
        else:
            chosen = random.choices(candidates, weights=[c.deployment.weight for c in candidates])[
                0
            ]
        if not chosen.breaker.allow():
            return None
        chosen.window.requests += 1
        return chosen

    def _others_in_service(self, live: _Live) -> bool:
        """Whether a request for this deployment's group has somewhere else to go: another
        deployment of the group or of its fallback chain whose circuit is closed. If
        not, its breaker may not open. (A chain that falls back to this group holds
        this group's whole chain, so it keeps that alternative too.)"""
        for group in self.config.fallback_chain(live.deployment.group):
            for other in self._live.get(group, ()):
                if other is not live and other.breaker.is_closed:
                    return True
        return False

    def _retry_after_hint(self, chain: list[str]) -> float:
        waits = [live.breaker.remaining() for group in chain for live in self._live.get(group, [])]
        return min(waits) if waits else self.config.cooldown.seconds

    def _backoff(self, attempt: int, error: ProviderError) -> float | None:
        """Seconds to wait before attempt `attempt` (>= 1); None: skip to the next group."""
        retry = self.config.retry
        hint = error.retry_after
        # parse_retry_after gives finite, non-negative figures; a provider module that
        # builds its own must still not make this raise or sleep for ever.
        if retry.honour_retry_after and hint is not None and math.isfinite(hint) and hint >= 0:
            if hint > retry.max_retry_after_seconds:
                return None
            return float(hint)
        base = min(retry.max_backoff_seconds, retry.backoff_seconds * (2 ** (attempt - 1)))
        return float(base * (0.5 + random.random() / 2))

    def _prepare(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        prepared = {**deployment.defaults, **body} if deployment.defaults else dict(body)
        prepared["model"] = deployment.model
        if (
            deployment.max_tokens
            and "max_tokens" not in prepared
            and "max_completion_tokens" not in prepared
        ):
            prepared["max_tokens"] = deployment.max_tokens
        return prepared

    # -- the walk --------------------------------------------------------------
    async def _walk(
        self, group: str, body: dict[str, Any], call: Any, attempts: list[Deployment] | None
    ) -> tuple[Any, Deployment]:
        chain = self.config.fallback_chain(group)
        last_error: ProviderError | None = None
        charged: set[str] = set()  # deployments this request counted a failure against
        # Deployments this request will not call again: refused in a way a retry would
        # meet again, or held in service after failing (one call per request).
        spent: set[str] = set()
        for position, current in enumerate(chain):
            if position > 0:
                metrics.LLM_FALLBACKS.labels(chain[0], current).inc()
            tried: set[str] = set()
            for attempt in range(1 + self.config.retry.attempts):
                if attempt > 0:  # the previous attempt failed (`last_error`)
                    assert last_error is not None
                    if not self._candidates(current, tried | spent):
                        tried.clear()  # every deployment tried once: retry the best again
                    if not self._candidates(current, tried | spent):
                        break  # nothing left to try here: no backoff for nothing
                    if last_error.retryable:  # a refusal moves on to another one at once
                        wait = self._backoff(attempt, last_error)
                        if wait is None:
                            break
                        await asyncio.sleep(wait)
                    metrics.LLM_RETRIES.labels(current).inc()
                live = self._pick(current, tried | spent)
                if live is None:
                    break
                deployment = live.deployment
                tried.add(deployment.id)
                if attempts is not None:  # the caller's ledger prices a call it abandons
                    attempts.append(deployment)
                started = time.perf_counter()
                try:
                    result = await call(live.provider, deployment, self._prepare(deployment, body))
                except ProviderError as error:
                    failure = local_failure(deployment, error) if error.kind == "local" else error
                except Exception as exc:  # Skygate's side of the call broke, not the upstream
                    failure = local_failure(deployment, exc)
                except BaseException:
                    live.breaker.release()
                    raise
                else:
                    deployment.observe_latency(time.perf_counter() - started)
                    live.breaker.record_success()
                    return result, deployment
                last_error = failure
                if self._failed(live, current, failure, charged, attempt + 1):
                    raise failure
                if not failure.retryable or live.breaker.held:
                    spent.add(deployment.id)
        if last_error is not None:
            raise last_error
        raise NoDeploymentAvailable(self._retry_after_hint(chain))

    def _failed(
        self, live: _Live, group: str, error: ProviderError, charged: set[str], attempt: int
    ) -> bool:
        """Account for one failed attempt; True when it ends the request."""
        deployment = live.deployment
        if error.kind == "local":  # logged by `local_failure`
            live.breaker.release()
            return True
        metrics.LLM_UPSTREAM_ERRORS.labels(deployment.kind, group, error.kind).inc()
        if error.client_fault:
            live.breaker.release()
            return True
        if not error.retryable:
            # A refused key, model or URL (401, 403, 404): the operator's configuration,
            # not the deployment's health; the walk moves on to another deployment.
            live.breaker.release()
        # One failure per request and deployment; a failed probe always counts (it
        # re-opens the circuit for another period).
        elif deployment.id not in charged or not live.breaker.is_closed:
            charged.add(deployment.id)
            live.breaker.record_failure(error, may_open=self._others_in_service(live))
        log.info(
            "upstream_failed",
            deployment=deployment.id,
            kind=error.kind,
            status=error.status,
            attempt=attempt,
            message=error.message[:200],
        )
        return False

    async def complete(
        self, group: str, body: dict[str, Any], *, attempts: list[Deployment] | None = None
    ) -> tuple[Completion, Deployment]:
        async def call(provider: Provider, d: Deployment, b: dict[str, Any]) -> Completion:
            return await provider.complete(d, b)

        result, deployment = await self._walk(group, body, call, attempts)
        self._count_tokens(deployment, result.usage.prompt_tokens + result.usage.completion_tokens)
        return result, deployment

    async def embed(
        self, group: str, body: dict[str, Any], *, attempts: list[Deployment] | None = None
    ) -> tuple[Completion, Deployment]:
        async def call(provider: Provider, d: Deployment, b: dict[str, Any]) -> Completion:
            return await provider.embed(d, b)

        result, deployment = await self._walk(group, body, call, attempts)
        self._count_tokens(deployment, result.usage.prompt_tokens)
        return result, deployment

    async def open_stream(
        self, group: str, body: dict[str, Any], *, attempts: list[Deployment] | None = None
    ) -> StreamHandle:
        async def call(provider: Provider, d: Deployment, b: dict[str, Any]) -> StreamHandle:
            stream = provider.stream(d, b)
            try:
                first = await anext(stream)
            except StopAsyncIteration as exc:
                raise ProviderError("garbage", f"{d.id} sent an empty stream") from exc
            except BaseException:
                await stream.aclose()  # type: ignore[attr-defined]
                raise
            return StreamHandle(d, first, stream)

        handle, _ = await self._walk(group, body, call, attempts)
        assert isinstance(handle, StreamHandle)
        return handle

    def _count_tokens(self, deployment: Deployment, tokens: int) -> None:
        for live in self._live.get(deployment.group, []):
            if live.deployment is deployment:
                live.window.tokens += tokens

    def count_stream_tokens(self, deployment: Deployment, tokens: int) -> None:
        self._count_tokens(deployment, tokens)

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
