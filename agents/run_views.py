"""What a run looks like from outside: the request that starts one, and the run object
every transport returns.

`RunRequest` validates a run's input as the chat route validates messages, so junk
fails at the request, not at the run's first turn; `run_object` is the `agent.run`
body (HTTP, SSE events, jobs, chat replies); `FINISHED` names the statuses a run never
leaves. Plain data: it reads an `AgentRun` row but never queries one or runs anything
(`agents.runs` does).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.definitions import RunLimits
from core.gateway.schemas import Message
from database.models import AgentRun

INPUT_ROLES = frozenset({"user", "assistant", "system", "developer"})
FINISHED = ("completed", "incomplete", "failed", "cancelled")
Mode = Literal["sync", "stream", "background", "chat", "ws"]


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[dict[str, Any]] = Field(min_length=1)
    thread_id: str | None = Field(default=None, max_length=40)
    stream: bool = False
    background: bool = False
    limits: RunLimits | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("input")
    @classmethod
    def _messages(cls, value: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(value, str):
            return value
        for index, message in enumerate(value):
            role = message.get("role")
            content = message.get("content")
            if not isinstance(role, str) or role not in INPUT_ROLES:  # a list: unhashable
                raise ValueError(f"input[{index}].role must be one of {sorted(INPUT_ROLES)}")
            if not isinstance(content, str | list):
                raise ValueError(f"input[{index}].content must be a string or a list of parts")
            if set(message) - {"role", "content", "name"}:
                raise ValueError(f"input[{index}] may only have role, content and name")
            try:  # the chat route's own check: junk parts fail here, not at the first turn
                Message.model_validate(message)
            except ValidationError as exc:  # the union branch that got furthest names it
                error = max(exc.errors(), key=lambda e: len(e["loc"]))
                where = ".".join(str(p) for p in error["loc"] if isinstance(p, int) or p.islower())
                raise ValueError(f"input[{index}].{where}: {error['msg']}") from None
        return value

    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return [dict(m) for m in self.input]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _ts(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def run_object(row: AgentRun) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "agent.run",
        "agent_id": row.agent_id,
        "agent_version": row.agent_version,
        "thread_id": row.thread_id,
        "status": row.status,
        "stop_reason": row.stop_reason,
        "output": row.output,
        "usage": row.usage,
        "required_action": row.required_action,
        "error": row.error,
        "limits": row.limits,
        "background": row.mode == "background",
        "created_at": _ts(row.created_at),
        "started_at": _ts(row.started_at),
        "finished_at": _ts(row.finished_at),
        "last_seq": row.last_seq,
    }


def empty_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cost_usd": 0.0,
        "llm_calls": 0,
        "tool_calls": 0,
        "estimated": False,
    }
