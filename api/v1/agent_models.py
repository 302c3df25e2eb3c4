"""The documented shapes of the agents routes (`api.v1.agents`): what the OpenAPI
document promises and the fuzz pass (tests/security/test_fuzz.py) holds every
answer to. The bodies themselves are built by `agents.registry` and `agents.run_views`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agents.definitions import AgentSpec, RunLimits, StopReason
from api.bodies import GatewayBody

RunStatus = Literal[
    "queued", "in_progress", "requires_action", "completed", "incomplete", "failed", "cancelled"
]


class AgentSummary(GatewayBody):
    id: str
    object: Literal["agent"]
    name: str
    description: str
    status: Literal["active", "disabled"]
    model: str
    tools: list[str]
    version: int
    shared: bool


class AgentList(GatewayBody):
    object: Literal["list"]
    data: list[AgentSummary]


class AgentDetail(AgentSummary):
    instructions: str
    model_settings: dict[str, Any]
    limits: dict[str, Any]
    output_schema: dict[str, Any] | None
    tool_definitions: list[Any]


class AgentDeleted(GatewayBody):
    id: str
    object: Literal["agent.deleted"]
    deleted: bool


class AgentCreate(AgentSpec):
    """An agent, and the tenant it is for (none: every tenant's)."""

    tenant: str | None = Field(default=None, min_length=1, max_length=128)


class AgentPatch(BaseModel):
    """Any of an agent's fields; the others stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    status: Literal["active", "disabled"] | None = None
    model: str | None = None
    instructions: str | None = None
    model_settings: dict[str, Any] | None = None
    tools: list[Any] | None = None
    limits: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[dict[str, Any]]
    thread_id: str | None = None
    stream: bool = False
    background: bool = False
    limits: RunLimits | None = None
    idempotency_key: str | None = None


class RunUsage(GatewayBody):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    llm_calls: int
    tool_calls: int
    estimated: bool


class ToolCallView(GatewayBody):
    id: str | None
    name: str
    arguments: str


class RequiredAction(GatewayBody):
    type: Literal["submit_tool_outputs"]
    tool_calls: list[ToolCallView]


class RunError(GatewayBody):
    code: str
    message: str
    status: int | None = None


class RunObject(GatewayBody):
    id: str
    object: Literal["agent.run"]
    agent_id: str
    agent_version: int
    thread_id: str
    status: RunStatus
    stop_reason: StopReason | None
    output: str | None
    usage: RunUsage
    required_action: RequiredAction | None
    error: RunError | None
    limits: dict[str, Any]
    background: bool
    created_at: int | None
    started_at: int | None
    finished_at: int | None
    last_seq: int


class RunEvent(GatewayBody):
    """One event: `type`, the run, its per-run `seq`, and the type's own fields."""

    model_config = ConfigDict(extra="allow")

    type: str
    run_id: str
    seq: int


class ThreadMessages(GatewayBody):
    object: Literal["list"]
    thread_id: str
    data: list[dict[str, Any]]
