"""The agents layer of a process: registry, run engine and run service, opened over
the core layers (`core.container`) and closed before them.

The web app opens it over its services (and reports agents and active runs in
`/health`); `python -m worker` opens it over its gateway layer to execute background
runs. Both register the `agent.run` job type with a `RuntimeSlot` that is filled
here, so the same queue serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.chat import AgentChat
from agents.definitions import EXAMPLES, AgentsConfigError, AgentsFile, AgentSpec, load_agents_file
from agents.engine import RunEngine
from agents.event_stream import EventBus
from agents.events import LiveRuns
from agents.jobs import NAME as AGENT_RUN
from agents.jobs import RuntimeSlot, agent_run_type
from agents.registry import AgentRegistry
from agents.runs import RunService
from agents.state import RunState
from agents.tools.base import Tool, ToolContext, ToolSettings
from agents.tools.catalog import build_tools
from agents.tools.http import SafeHttp
from agents.watchers import RunWatchers
from core.config import ConfigurationError, Settings
from core.infra.redis import ResilientRedis
from core.jobs.service import JobService
from core.jobs.types import JobTypes
from database.models import AgentRun
from database.repositories.agents import AgentRepository, RunRepository

log = structlog.get_logger("skygate.agents")


class AgentsMonitor:
    """Agents and active runs, counted in the background (never on a probe's time):
    the database's agents and runs change from every instance."""

    INTERVAL = 10.0

    def __init__(self, registry: AgentRegistry, runs: RunService) -> None:
        self.registry = registry
        self.runs = runs
        self.counts: dict[str, int] = {**registry.counts(), "runs_active": 0}
        self.database_ok = True

    async def refresh(self) -> None:
        try:
            census = await self.registry.census()
            active = await self.runs.active_runs()
        except Exception as exc:  # the database away: keep the last counts
            self.database_ok = False
            log.debug("agents_census_failed", error=type(exc).__name__)
            return
        self.database_ok = True
        self.counts = {**census, "runs_active": active}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            await self.refresh()

    def report(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.database_ok else "degraded",
            "latency_ms": None,
            **self.counts,
            "runs_here": len(self.runs.live),
        }


@dataclass(slots=True)
class Agents:
    registry: AgentRegistry
    runs: RunService
    live: LiveRuns
    monitor: AgentsMonitor
    chat: AgentChat
    watchers: RunWatchers
    redis: ResilientRedis

    def live_available(self) -> bool:
        """Whether a run's events reach followers on other processes and instances
        live (Redis up); otherwise they read them from the database, later."""
        return self.live.bus is not None and self.live.bus.live_available


class _RouterModels:
    def __init__(self, router: Any) -> None:
        self.router = router

    def known(self, name: str) -> bool:
        return self.router.resolve(name) is not None

    def names(self) -> list[str]:
        return sorted(self.router.public_names())


def agents_file(settings: Settings, *, router: Any, demo: bool) -> AgentsFile:
    """AGENTS_CONFIG, validated (a mistake, an unknown model included, stops the
    start with its line), or the bundled examples while the demo model serves, or none."""
    path = settings.agents_config or (str(EXAMPLES) if demo else None)
    if path is None:
        return AgentsFile()
    try:
        return load_agents_file(path, models=_RouterModels(router))
    except AgentsConfigError as exc:
        raise ConfigurationError(f"AGENTS_CONFIG is invalid:\n{exc}") from None


def with_agent_runs(types: JobTypes, slot: RuntimeSlot) -> JobTypes:
    """`types` and `agent.run` bound to this process's slot (a copy: several apps of
    one test process each have their own)."""
    combined = JobTypes(dict(types.types))
    combined.types.pop(AGENT_RUN, None)
    combined.add(agent_run_type(slot))
    return combined


def tool_settings(settings: Settings) -> ToolSettings:
    return ToolSettings(
        allowed_networks=tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.agent_tools_allowed_networks
        )
    )


@asynccontextmanager
async def open_agents(
    *,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    gateway: Any,  # core.container.Gateway, or Services (both have these parts)
    jobs: JobService | None,
    slot: RuntimeSlot,
    demo: bool,
    redis: ResilientRedis,
) -> AsyncIterator[Agents]:
    file = agents_file(settings, router=gateway.router, demo=demo)
    registry = AgentRegistry(AgentRepository(sessions), file)
    specs = tool_settings(settings)
    http = SafeHttp(specs)
    bus = EventBus(redis)
    live = LiveRuns(bus)
    tools_of: dict[str, list[Tool]] = {}

    def tools(agent: AgentSpec) -> list[Tool]:
        # Header values whole: masked, two versions differing only there would share tools.
        key = agent.model_dump_json(include={"id", "tools"}, context={"reveal_secrets": True})
        if key not in tools_of:
            tools_of[key] = build_tools(agent.tools, settings=specs)
        return tools_of[key]

    def context(state: RunState) -> ToolContext:
        return ToolContext(tenant=state.tenant, run_id=state.run_id, http=http)

    engine = RunEngine(
        completions=gateway.completions,
        limiter=gateway.limiter,
        spend=gateway.spend,
        settings=settings,
        tools=tools,
        tool_context=context,
    )
    service = RunService(
        registry=registry,
        runs=RunRepository(sessions),
        engine=engine,
        live=live,
        tool_output_timeout=settings.agent_tool_output_timeout_seconds,
    )
    if jobs is not None:

        async def enqueue(row: AgentRun) -> str:
            job = await jobs.submit(
                tenant=row.tenant,
                api_key_id=row.api_key_id,
                type=AGENT_RUN,
                input={"run_id": row.id},
                dedupe_key=f"run:{row.id}",
                internal=True,
            )
            return job.id

        service.enqueue = enqueue
    async with AsyncExitStack() as stack:
        stack.push_async_callback(http.aclose)
        stack.push_async_callback(bus.close)  # after the runs: their last appends go out
        stack.push_async_callback(service.close)
        slot.set(service)
        stack.callback(slot.set, None)
        monitor = AgentsMonitor(registry, service)
        await monitor.refresh()
        watching = asyncio.create_task(monitor.run(), name="agents-monitor")

        async def stop_watching() -> None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

        stack.push_async_callback(stop_watching)
        log.info("agents_ready", agents=len(file.agents))
        watchers = RunWatchers(redis, live, grace=settings.ws_run_grace_seconds)
        stack.push_async_callback(watchers.close)
        yield Agents(
            registry=registry,
            runs=service,
            live=live,
            monitor=monitor,
            chat=AgentChat(service),
            watchers=watchers,
            redis=redis,
        )
