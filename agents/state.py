"""A run's state as the engine keeps it, and the commands that reach it while it runs.

`RunState` is the run in memory (conversation, usage, outcome); `Control` carries the
commands (a cancel, client tool outputs) from whichever transport holds the run; `Stop`
ends the loop with a stop reason. The run service (`agents.runs`) builds and persists
these; the engine (`agents.engine`) and its stages only read and update them. Nothing
here does I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.definitions import AgentLimits, AgentSpec
from core.auth.authenticator import Principal

STATUS_OF = {
    "final": "completed",
    "cancelled": "cancelled",
    "error": "failed",
}


class Stop(Exception):
    """The loop ends here with `reason` (a limit, a cancel, an error)."""

    def __init__(
        self, reason: str, message: str = "", *, code: str | None = None, status: int = 500
    ) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message
        self.code = code
        self.status = status  # the HTTP status the failure would have had as a chat call


class Control:
    """Commands into a running run: a cancel, and tool outputs for `requires_action`."""

    def __init__(self) -> None:
        self.cancel_mode: str | None = None
        self.cancelled = asyncio.Event()  # set for an immediate cancel
        self.outputs: dict[str, str] = {}
        self.outputs_arrived = asyncio.Event()

    def cancel(self, mode: str) -> None:
        if self.cancel_mode == "immediate":
            return
        self.cancel_mode = mode
        if mode == "immediate":
            self.cancelled.set()

    def stopping(self) -> bool:
        """A cancel arrived (read at turn boundaries: `after_turn` waits for them)."""
        return self.cancel_mode is not None

    def provide(self, outputs: dict[str, str]) -> None:
        self.outputs.update(outputs)
        self.outputs_arrived.set()


@dataclass(slots=True)
class RunUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    llm_calls: int = 0
    tool_calls: int = 0
    estimated: bool = False

    def add(self, event: Any) -> None:
        """A usage record of one of the run's calls (`UsageEvent`)."""
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        self.cost_usd += float(event.cost_usd)
        self.llm_calls += 1
        self.estimated = self.estimated or bool(event.estimated)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 9),
            "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
            "estimated": self.estimated,
        }


@dataclass(slots=True)
class RunState:
    """One run as the engine sees it."""

    run_id: str
    agent: AgentSpec
    limits: AgentLimits
    tenant: str
    messages: list[dict[str, Any]]  # the conversation so far (thread + input)
    principal: Callable[[], Awaitable[Principal]]  # re-read as the edge re-reads a key
    new_messages: list[dict[str, Any]] = field(default_factory=list)  # for the thread
    usage: RunUsage = field(default_factory=RunUsage)
    output: str | None = None
    stop_reason: str | None = None
    error: dict[str, Any] | None = None
    turn: int = 0
    started: float = field(default_factory=time.monotonic)
    identical: dict[str, int] = field(default_factory=dict)
    required_action: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        if self.stop_reason is None:
            return "in_progress"
        return STATUS_OF.get(self.stop_reason, "incomplete")


# Paused for client tool outputs: (the run, what it waits for) -> the outputs by call id.
WaitForOutputs = Callable[[RunState, list[dict[str, Any]]], Awaitable[dict[str, str]]]
