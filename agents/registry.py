"""Which agents a tenant can see and run.

Three sources, the first that has an id wins: the tenant's own agents (admin API,
versioned in the database), agents shared with every tenant through the admin API
(stored under the tenant `*`), and the file's (`AGENTS_CONFIG`, version 1 while the
file is unchanged; a run keeps the definition it ran with either way). Lookups read
the database each time: agents are read once per run, and a definition edited on
one instance is what every other runs next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agents.definitions import AgentsFile, AgentSpec
from database.repositories.agents import AgentRepository

SHARED = "*"


@dataclass(frozen=True, slots=True)
class Agent:
    spec: AgentSpec
    version: int
    source: str  # "tenant", "shared" or "file"
    tenant: str | None  # the owning tenant; None: every tenant's

    def summary(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "id": spec.id,
            "object": "agent",
            "name": spec.name,
            "description": spec.description,
            "status": spec.status,
            "model": spec.model,
            "tools": spec.tool_names,
            "version": self.version,
            "shared": self.tenant is None,
        }

    def detail(self) -> dict[str, Any]:
        spec = self.spec
        return {
            **self.summary(),
            "instructions": spec.instructions,
            "model_settings": spec.model_settings,
            "limits": spec.limits.model_dump(mode="json"),
            "output_schema": spec.output_schema,
            "tool_definitions": [_tool_view(t) for t in spec.definition()["tools"]],
        }


def _tool_view(tool: Any) -> Any:
    """A tool as an API answer shows it: never a header value (secrets live there)."""
    if isinstance(tool, dict) and "headers" in tool:
        return {**tool, "headers": dict.fromkeys(tool["headers"] or {}, "***")}
    return tool


class AgentRegistry:
    def __init__(self, repository: AgentRepository, file: AgentsFile) -> None:
        self.repository = repository
        self.file = {spec.id: spec for spec in file.agents}

    async def visible(self, tenant: str) -> list[Agent]:
        found: dict[str, Agent] = {
            spec.id: Agent(spec, 1, "file", None) for spec in self.file.values()
        }
        rows = await self.repository.current(SHARED)
        if tenant != SHARED:
            rows += await self.repository.current(tenant)
        for row in sorted(rows, key=lambda r: r.tenant != SHARED):  # the tenant's win
            agent = _from_row(row)
            if agent is not None:
                found[agent.spec.id] = agent
        return sorted(found.values(), key=lambda a: a.spec.id)

    async def get(self, tenant: str, agent_id: str) -> Agent | None:
        for owner in (tenant, SHARED):
            row = await self.repository.get(owner, agent_id)
            if row is not None:
                agent = _from_row(row)
                if agent is not None:
                    return agent
        spec = self.file.get(agent_id)
        return Agent(spec, 1, "file", None) if spec is not None else None

    def counts(self) -> dict[str, int]:
        """The file's agents (for /health; the database's are counted by `census`)."""
        active = sum(1 for spec in self.file.values() if spec.status == "active")
        return {"total": len(self.file), "active": active}

    async def census(self) -> dict[str, int]:
        rows = await self.repository.current()
        agents = [a for a in map(_from_row, rows) if a is not None]
        file = self.counts()
        return {
            "total": file["total"] + len(agents),
            "active": file["active"] + sum(1 for a in agents if a.spec.status == "active"),
        }


def _from_row(row: Any) -> Agent | None:
    try:
        spec = AgentSpec.model_validate(row.definition)
    except ValidationError:  # stored by an older build that accepted it: skip, never crash
        return None
    tenant = None if row.tenant == SHARED else row.tenant
    return Agent(spec, row.version, "shared" if tenant is None else "tenant", tenant)
