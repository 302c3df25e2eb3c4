"""The token and cost budget of one model turn: how large it may be, and what it holds.

Before each turn the engine asks `TurnBudget` for the turn's `max_tokens` and then
reserves the turn's worst-case cost (the dearest deployment of the model, at that many
completion tokens) against two budgets:
- the run's own (`max_total_tokens`, `max_cost_usd`): the turn is cut to what is left,
  and a run with less than `MIN_TURN_TOKENS` left stops with `token_budget` or
  `cost_budget` instead of making a call too small to answer;
- the key's monthly budget (`SpendTracker`): the worst case counts as spent until the
  call settles and `release` gives it back, so concurrent turns of one key (in this
  process) cannot together overrun it.

A turn that may still call tools keeps room back for the finalizing call (its prompt
about this turn's, plus a short answer of at most `FINAL_RESERVE_TOKENS`), so a run that
its budget stops can still answer from what it gathered; the finalizing call itself may
use all that is left. Only the engine calls this; nothing here makes a model call.
"""

from __future__ import annotations

from typing import Any

from agents.state import RunState, Stop
from core.gateway.ledger import prompt_tokens
from core.limits.budget import SpendTracker
from core.llm.router import Router

DEFAULT_MAX_TOKENS = 1024  # a turn's completion tokens when the agent sets none
MIN_TURN_TOKENS = 16  # a turn the budget cannot give this many tokens is not made
FINAL_RESERVE_TOKENS = 256  # at most this much answer is kept back for a finalizing call
Reserved = tuple[str | None, float]  # the key charged, and how much (given back on release)


class TurnBudget:
    def __init__(self, *, router: Router, spend: SpendTracker) -> None:
        self.router = router
        self.spend = spend

    def final_tokens(self, state: RunState, limit: int | float) -> int:
        """Completion tokens kept back for the finalizing call while tools still run."""
        if state.limits.on_limit != "finalize":
            return 0
        return max(MIN_TURN_TOKENS, min(FINAL_RESERVE_TOKENS, int(limit) // 8))

    def turn_tokens(self, state: RunState, body: dict[str, Any], *, final: bool) -> int:
        """The turn's max_tokens: the agent's, cut to what the run's token budget
        leaves. A turn that may call tools leaves room for one last call (its prompt
        about this one's, plus a short answer) so a run stopped by its budget can
        still answer; the last call may use all that is left."""
        wanted = state.agent.model_settings.get("max_tokens") or state.agent.model_settings.get(
            "max_completion_tokens"
        )
        tokens = int(wanted) if isinstance(wanted, int) else DEFAULT_MAX_TOKENS
        limit = state.limits.max_total_tokens
        if limit is not None:
            prompt = prompt_tokens(body["messages"])
            left = limit - state.usage.total_tokens - prompt
            if not final:
                left -= prompt + self.final_tokens(state, limit)
            if left < MIN_TURN_TOKENS:
                raise Stop("token_budget")
            tokens = min(tokens, left)
        return tokens

    async def reserve(self, state: RunState, body: dict[str, Any], *, final: bool) -> Reserved:
        """The turn's worst-case cost, against the run's budget (cutting max_tokens to
        fit, with the same room kept for a last call as for tokens) and the key's month
        (counted as spent until the call settles)."""
        router = self.router
        group = router.resolve(body["model"])
        deployments = router.deployments(group) if group is not None else []
        prompt = prompt_tokens(body["messages"])

        def worst(tokens: int) -> float:
            return max((router.cost(d, prompt, tokens) for d in deployments), default=0.0)

        cost = worst(body["max_tokens"])
        limit = state.limits.max_cost_usd
        if limit is not None:
            left = limit - state.usage.cost_usd
            if not final:
                left -= worst(self.final_tokens(state, body["max_tokens"] * 8))
            if cost > left:
                per_token = (worst(1_000_000) - worst(0)) / 1_000_000
                affordable = int((left - worst(0)) / per_token) if per_token else 0
                if affordable < MIN_TURN_TOKENS:
                    raise Stop("cost_budget")
                body["max_tokens"] = affordable
                cost = worst(affordable)
        principal = await state.principal()
        if cost and principal.key_id is not None:
            self.spend.reserve(principal.key_id, cost)
            return principal.key_id, cost
        return None, 0.0

    def release(self, reserved: Reserved) -> None:
        key_id, cost = reserved
        if key_id is not None and cost:
            self.spend.release(key_id, cost)
