"""What an agent is: instructions, a model group, tools and hard limits.

Agents come from a YAML file (`AGENTS_CONFIG`, shared by every tenant, validated at
start with `file:line: field: message` by `core.yaml_models`) and from the admin API
(one tenant's, versioned in the database). Both are validated by the same models, so
an agent that loads from one would load from the other.

A run may tighten an agent's limits, never loosen them (`AgentLimits.tightened`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agents.tools.specs import ToolSpec, tool_name
from core.errors import BadRequestError
from core.yaml_models import (
    StrictModel,
    YamlModelError,
    field_error,
    load_yaml_model,
    raise_field_errors,
)

AGENT_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# What an agent may set on each of its model calls: sampling, length and output shape.
# Nothing that chooses a destination or credentials (those are the router's), nor
# what the run engine owns (messages, tools, tool_choice, stream).
MODEL_SETTINGS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stop",
        "parallel_tool_calls",
        "reasoning_effort",
        "user",
    }
)
StopReason = Literal[
    "final",
    "max_turns",
    "max_tool_calls",
    "repeated_tool_call",
    "token_budget",
    "cost_budget",
    "timeout",
    "cancelled",
    "error",
]


class ModelCheck(Protocol):
    def known(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...


class AgentLimits(StrictModel):
    """Checked before every turn and every tool call. `on_limit: finalize` makes one
    last tool-less call so a run that hit a limit still answers from what it gathered."""

    max_turns: int = Field(default=10, ge=1, le=100)
    max_tool_calls: int = Field(default=25, ge=0, le=1000)
    max_identical_tool_calls: int = Field(default=3, ge=1, le=100)
    max_wall_seconds: float = Field(default=120.0, gt=0, le=3600)
    tool_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    max_total_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_parallel_tool_calls: int = Field(default=4, ge=1, le=32)
    max_tool_output_chars: int = Field(default=16_000, ge=100, le=1_000_000)
    on_limit: Literal["finalize", "stop"] = "finalize"

    def tightened(self, override: RunLimits | None) -> AgentLimits:
        """These limits with a run's own; 400 for a value looser than the agent's."""
        if override is None:
            return self
        values = self.model_dump()
        for name, value in override.model_dump(exclude_none=True).items():
            current = values[name]
            if name == "on_limit":
                values[name] = value
            elif current is not None and value > current:
                raise BadRequestError(
                    f"limits.{name} may only tighten the agent's limit ({current}); "
                    f"{value} is looser.",
                    param=f"limits.{name}",
                    code="limit_not_allowed",
                )
            else:
                values[name] = value
        return AgentLimits.model_validate(values)


class RunLimits(StrictModel):
    """A run's limits: any of the agent's, each at most the agent's value."""

    max_turns: int | None = Field(default=None, ge=1, le=100)
    max_tool_calls: int | None = Field(default=None, ge=0, le=1000)
    max_identical_tool_calls: int | None = Field(default=None, ge=1, le=100)
    max_wall_seconds: float | None = Field(default=None, gt=0, le=3600)
    tool_timeout_seconds: float | None = Field(default=None, gt=0, le=600)
    max_total_tokens: int | None = Field(default=None, ge=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_parallel_tool_calls: int | None = Field(default=None, ge=1, le=32)
    max_tool_output_chars: int | None = Field(default=None, ge=100, le=1_000_000)
    on_limit: Literal["finalize", "stop"] | None = None


class AgentSpec(StrictModel):
    id: str = Field(pattern=AGENT_ID)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    status: Literal["active", "disabled"] = "active"
    model: str = Field(min_length=1, max_length=256)
    instructions: str = Field(default="", max_length=100_000)
    model_settings: dict[str, Any] = Field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    limits: AgentLimits = AgentLimits()
    output_schema: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        check = (info.context or {}).get("models")
        if check is not None and not check.known(value):
            raise ValueError(
                f"'{value}' is not a model group or alias of this gateway "
                f"(known: {', '.join(check.names())})"
            )
        return value

    @field_validator("model_settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - MODEL_SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown model setting(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(sorted(MODEL_SETTINGS))}"
            )
        return value

    @field_validator("output_schema")
    @classmethod
    def _schema_is_object(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "object":
            raise ValueError("output_schema must be a JSON schema of type object")
        return value

    @model_validator(mode="after")
    def _unique_tools(self) -> AgentSpec:
        names = [tool_name(tool) for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique: {', '.join(duplicates)}")
        return self

    @property
    def tool_names(self) -> list[str]:
        return [tool_name(tool) for tool in self.tools]

    def definition(self) -> dict[str, Any]:
        """The JSON stored with a version and a run: header values whole (a masked
        dump would make the stored tool send `***`); API answers mask them."""
        return self.model_dump(mode="json", context={"reveal_secrets": True})


class AgentsFile(StrictModel):
    agents: tuple[AgentSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> AgentsFile:
        """A repeated id is reported at its own line (`agents.3.id`), not the file's first."""
        ids = [agent.id for agent in self.agents]
        message = "{id} is already used by {first}"
        errors = [
            field_error(
                ("agents", i, "id"),
                "duplicate_id",
                message,
                a,
                id=repr(a),
                first=f"agents.{ids.index(a)}",
            )
            for i, a in enumerate(ids)
            if a in ids[:i]
        ]
        if errors:
            raise_field_errors("AgentsFile", errors)
        return self


EXAMPLES = Path(__file__).with_name("examples.yaml")


class AgentsConfigError(ValueError):
    pass


def load_agents_file(path: str | Path, *, models: ModelCheck | None = None) -> AgentsFile:
    """`models` tells whether a name is a model group or alias of this gateway (an
    agent on anything else is a mistake on its line)."""
    try:
        return load_yaml_model(
            path,
            AgentsFile,
            what="agents config",
            expected="a mapping with agents",
            context={"models": models} if models is not None else None,
        )
    except YamlModelError as exc:
        raise AgentsConfigError(str(exc)) from None
