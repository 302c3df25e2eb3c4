"""The run engine: the tool-calling loop of one agent run, bounded and metered.

Events out, commands in: the engine emits numbered events (`agents.events.EventLog`)
and reads commands from a `Control` (cancel, tool outputs); it never knows which
transport (HTTP, SSE, a job, a WebSocket) started the run or is watching it.

Each model turn is a chat completion through `core.gateway.completions`, exactly as
`POST /api/v1/chat/completions` runs one: the key's models, request rate, token limit
and budget, the cache, the router with its fallbacks, and one usage record per call
(named with the agent, the run and the turn; `Caller.run`). The turn streams, so
deltas are events as they arrive, and cancelling the turn stops the provider call
(its ledger records what was used, estimated where the provider did not say).

Limits are checked before every turn and every tool call (`AgentLimits`); a run that
reaches one ends `incomplete` with that `stop_reason`, and with `on_limit: finalize`
(the default) one last tool-less call answers from what the run gathered. Before
each turn its worst-case cost is reserved against the run's budget and the key's
monthly budget (`SpendTracker`), and given back when the call settles.

This module is the loop itself; its stages live beside it: the run's state and its
commands (`agents.state`), a turn's token and cost budget (`agents.budget`), the tool
calls of a turn (`agents.tool_calls`), and reading a turn's answer, the messages around
it and each call's request-rate check (`agents.turns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from agents.budget import TurnBudget
from agents.definitions import AgentSpec
from agents.events import EventLog
from agents.state import Control, RunState, Stop, WaitForOutputs
from agents.tool_calls import ToolStage
from agents.tools.base import Tool, ToolContext, openai_tool
from agents.turns import Turn, answer_open_calls, last_text, read_answer, text_of, with_run
from core.auth.request_rate import Paced, RequestRate, admission_wait
from core.config import Settings
from core.errors import GatewayError
from core.gateway.cache import CacheDirectives
from core.gateway.completions import CompletionService, Upstream
from core.limits.admission import RunTurn
from core.limits.budget import SpendTracker
from core.limits.rate_limit import RateLimiter

log = structlog.get_logger("skygate.agents.engine")
FINALIZE_SECONDS = 15.0  # the last tool-less call after a timeout gets this long
FINALIZE_PROMPT = (
    "A limit of this run was reached ({reason}). Do not call tools. Answer the user now, "
    "as well as you can from what has been gathered so far."
)


class RunEngine:
    def __init__(
        self,
        *,
        completions: CompletionService,
        limiter: RateLimiter,
        spend: SpendTracker,
        settings: Settings,
        tools: Callable[[AgentSpec], list[Tool]],
        tool_context: Callable[[RunState], ToolContext],
    ) -> None:
        self.completions = completions
        self.limiter = limiter
        self.settings = settings
        self.tools = tools
        self.budget = TurnBudget(router=completions.router, spend=spend)
        self.tool_stage = ToolStage(tool_context=tool_context)

    async def run(
        self, state: RunState, events: EventLog, control: Control, wait: WaitForOutputs
    ) -> None:
        """Run to the end; the outcome is on `state` (never raises but for cancellation
        of the caller itself)."""
        tools = {tool.name: tool for tool in self.tools(state.agent)}
        loop = asyncio.ensure_future(self._loop(state, events, control, tools, wait))
        cancelled = asyncio.ensure_future(control.cancelled.wait())
        deadline = state.limits.max_wall_seconds - (time.monotonic() - state.started)
        try:
            await asyncio.wait(
                {loop, cancelled}, timeout=max(deadline, 0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
            if not loop.done():
                loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({loop})
        if loop.cancelled():
            reason = "cancelled" if control.cancelled.is_set() else "timeout"
            state.stop_reason = reason
            if reason == "timeout":
                await self._finalize(state, events, reason, within=FINALIZE_SECONDS)
        elif (failure := loop.exception()) is not None:  # a bug: the run fails, not the process
            log.error("run_failed", run_id=state.run_id, exc_info=failure)
            state.stop_reason = "error"
            state.error = {
                "code": "internal_error",
                "message": "The run failed unexpectedly.",
                "status": 500,
            }
        if state.output is None and state.stop_reason != "error":
            state.output = last_text(state.messages)

    # -- the loop ------------------------------------------------------------------
    async def _loop(
        self,
        state: RunState,
        events: EventLog,
        control: Control,
        tools: dict[str, Tool],
        wait: WaitForOutputs,
    ) -> None:
        offered = [openai_tool(tool) for tool in tools.values()]
        try:
            while True:
                if control.stopping():
                    raise Stop("cancelled")
                if state.turn >= state.limits.max_turns:
                    raise Stop("max_turns")
                turn = await self._model_turn(state, events, offered, control)
                state.turn += 1
                if not turn.tool_calls:
                    state.output = text_of(turn.message.get("content"))
                    state.stop_reason = "final"
                    return
                if control.stopping():
                    state.output = text_of(turn.message.get("content")) or None
                    raise Stop("cancelled")
                await self.tool_stage.run(state, events, tools, turn.tool_calls, wait)
        except Stop as stop:
            state.stop_reason = stop.reason
            if stop.reason == "error":
                state.error = {
                    "code": stop.code or "run_failed",
                    "message": stop.message,
                    "status": stop.status,
                }
                return
            if stop.reason != "cancelled" and state.limits.on_limit == "finalize":
                await self._finalize(state, events, stop.reason, within=None)

    async def _model_turn(
        self,
        state: RunState,
        events: EventLog,
        offered: list[dict[str, Any]],
        control: Control,
        *,
        finalize: str | None = None,
    ) -> Turn:
        agent = state.agent
        body: dict[str, Any] = {
            "model": agent.model,
            "messages": state.messages,
            **agent.model_settings,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if offered:
            body["tools"] = offered
            if finalize is not None:
                body["tool_choice"] = "none"
        if agent.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": agent.output_schema},
            }
        final = finalize is not None
        body["max_tokens"] = self.budget.turn_tokens(state, body, final=final)
        body.pop("max_completion_tokens", None)
        turn = state.turn
        reserved = await self.budget.reserve(state, body, final=final)
        try:
            message = await self._call(state, events, body, turn)
        finally:
            self.budget.release(reserved)
        calls = message.get("tool_calls") or []
        if finalize is not None:
            calls = []
            message.pop("tool_calls", None)
        state.messages.append(message)
        state.new_messages.append(message)
        events.emit("message.completed", {"turn": turn, "message": message})
        events.emit("usage.updated", {"usage": state.usage.as_dict()})
        return Turn(message, list(calls))

    async def _call(
        self, state: RunState, events: EventLog, body: dict[str, Any], turn: int
    ) -> dict[str, Any]:
        """One model call through the chat pipeline, streamed into events. A refusal
        for the request rate or token limit waits its retry-after (the wall limit
        bounds it); any other refusal ends the run."""
        while True:
            principal = await state.principal()
            caller = principal.caller(f"{state.run_id}:{turn}")
            caller = with_run(caller, RunTurn(state.agent.id, state.run_id, turn, state.usage.add))
            admit = RequestRate(self.limiter, principal, self.settings)
            try:
                outcome = await self.completions.chat(caller, dict(body), CacheDirectives(), admit)
                if isinstance(outcome, Upstream):
                    outcome = await outcome.call
                return await read_answer(outcome, events, turn)
            except Paced as paced:
                await asyncio.sleep(paced.seconds)
            except GatewayError as error:
                wait = admission_wait(error)
                if wait is not None:
                    await asyncio.sleep(wait)
                    continue
                if error.code == "budget_exceeded":
                    raise Stop("cost_budget", error.message, code=error.code) from None
                raise Stop(
                    "error",
                    error.message,
                    code=error.code or error.error_type,
                    status=error.status_code,
                ) from None

    async def _finalize(
        self, state: RunState, events: EventLog, reason: str, *, within: float | None
    ) -> None:
        """One last tool-less call after a limit; the run keeps its stop reason."""
        if state.limits.on_limit != "finalize":
            return
        answer_open_calls(state, reason)
        state.messages.append({"role": "user", "content": FINALIZE_PROMPT.format(reason=reason)})
        tools = self.tools(state.agent)
        try:
            async with asyncio.timeout(within):
                turn = await self._model_turn(
                    state, events, [openai_tool(t) for t in tools], Control(), finalize=reason
                )
        except (Stop, TimeoutError):
            return  # no room left for it: the run ends with what it has
        finally:
            state.messages.pop(-1 if state.messages[-1].get("role") == "user" else -2)
        state.turn += 1
        state.output = text_of(turn.message.get("content")) or state.output
