"""Admission of an LLM call: who is calling, may that key use this model, has
it budget left this month, and room in its token limit — and afterwards, the
correction of the token estimate and the spend by what the call really used.

The request pipeline (`core.gateway.completions`) asks here before any upstream call
and reports back after it; nothing here knows about caches or providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from core.errors import PermissionDeniedError, RateLimitError
from core.limits.budget import BudgetGauge, SpendTracker
from core.limits.rate_limit import RateLimiter, rate_limit_error
from core.observability import metrics

log = structlog.get_logger("skygate.admission")


@dataclass(frozen=True, slots=True)
class RunTurn:
    """The agent run a call belongs to (`agents.engine`): named on its usage record,
    and `observe` is handed that record when the call settles, so the run's usage
    is the sum of its calls' records, estimates included."""

    agent_id: str
    run_id: str
    turn: int
    observe: Callable[[Any], None] | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the tenant owns the cache entries and the usage; the rest
    are the permissions and limits of the key (None: unrestricted)."""

    tenant: str
    request_id: str
    api_key_id: str | None = None
    limit_key: str | None = None
    allowed_models: frozenset[str] | None = None
    tokens_per_minute: int | None = None
    monthly_budget_usd: float | None = None
    run: RunTurn | None = None


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """Tokens counted against a limit at admission, to be settled by real usage."""

    limit_key: str
    per_minute: int
    estimate: int
    headers: dict[str, str]


class Admission:
    def __init__(
        self,
        *,
        limiter: RateLimiter,
        spend: SpendTracker,
        default_tokens_per_minute: int | None = None,
    ) -> None:
        self.limiter = limiter
        self.spend = spend
        self.default_tokens_per_minute = default_tokens_per_minute
        self.budget_gauge = BudgetGauge()

    async def authorize(self, caller: Caller, group: str) -> None:
        """403 for a model outside the key's list; 429 once its monthly budget is spent."""
        if caller.allowed_models is not None and group not in caller.allowed_models:
            metrics.SECURITY_EVENTS.labels("model_forbidden").inc()
            log.info("model_forbidden", key_id=caller.api_key_id, model=group)
            raise PermissionDeniedError(
                f"This API key is not allowed to use the model '{group}'.",
                param="model",
                code="model_not_allowed",
            )
        budget = caller.monthly_budget_usd
        if budget is None or caller.api_key_id is None:
            return
        spent = await self.spend.spent(caller.api_key_id)
        self.budget_gauge.observe(
            tenant=caller.tenant, key_id=caller.api_key_id, spent=spent, budget=budget
        )
        if spent >= budget:
            metrics.SECURITY_EVENTS.labels("over_budget").inc()
            metrics.RATE_LIMITED.labels("monthly_budget").inc()
            log.info("over_budget", key_id=caller.api_key_id, spent=round(spent, 6), budget=budget)
            raise RateLimitError(
                f"This API key has used its monthly budget of ${budget:.2f} (spent "
                f"${spent:.2f}); it resets on the first day of next month (UTC) or when "
                "the budget is raised.",
                code="budget_exceeded",
            )

    async def admit_tokens(self, caller: Caller, estimate: int) -> TokenGrant | None:
        """Count `estimate` tokens against the caller's limit, or 429. None: no limit."""
        per_minute = caller.tokens_per_minute or self.default_tokens_per_minute
        if per_minute is None or caller.limit_key is None:
            return None
        decision = await self.limiter.admit_tokens(
            caller.limit_key, per_minute=per_minute, estimate=estimate
        )
        if not decision.allowed:
            raise rate_limit_error(decision, limit_key=caller.limit_key)
        return TokenGrant(caller.limit_key, per_minute, estimate, decision.token_headers())

    async def settle(
        self, caller: Caller, grant: TokenGrant | None, *, tokens: int, cost: float
    ) -> None:
        """After the call: its cost to the month's spend, its real tokens to the limit."""
        if caller.api_key_id is not None and cost:
            self.spend.add(caller.api_key_id, cost)
        if grant is not None:
            await self.limiter.settle_tokens(
                grant.limit_key, per_minute=grant.per_minute, estimate=grant.estimate, actual=tokens
            )
