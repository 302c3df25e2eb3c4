"""Agent runs: start one, read it, follow its events, cancel it, answer its client tools.

A run is a row (`agent_runs`) from the moment it is asked for. Where it executes
depends on how it was asked: `sync`, `stream` and `chat` runs execute in the process
that took the request and are cancelled when their client leaves; `background` runs
go on the job queue (`agents.jobs`) and execute on a worker. Either way the same
`execute` drives the engine, so the run's events, usage and final state are the same.

Commands reach a run through its row, so they work from any process: a cancel or
tool outputs are written there, and the process running it reads them (at once when
it is this one, within `COMMAND_POLL_SECONDS` otherwise).

The request that starts a run and the run object it answers with are `agents.run_views`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog

from agents.definitions import AgentSpec
from agents.engine import RunEngine
from agents.events import EventLog, LiveRuns, RunEvent, follow
from agents.registry import AgentRegistry
from agents.run_views import FINISHED, Mode, RunRequest, empty_usage, new_id, run_object
from agents.state import Control, RunState, Stop
from core.auth.authenticator import Principal
from core.errors import BadRequestError, ConflictError, NotFoundError, PermissionDeniedError
from database.models import AgentRun
from database.repositories.agents import ACTIVE_RUN, DuplicateRun, RunRepository

log = structlog.get_logger("skygate.agents.runs")
COMMAND_POLL_SECONDS = 0.5
PrincipalSource = Callable[[], Awaitable[Principal]]
Enqueue = Callable[[AgentRun], Awaitable[str]]  # submits the job, returns its id


class RunService:
    def __init__(
        self,
        *,
        registry: AgentRegistry,
        runs: RunRepository,
        engine: RunEngine,
        live: LiveRuns,
        tool_output_timeout: float,
    ) -> None:
        self.registry = registry
        self.runs = runs
        self.engine = engine
        self.live = live
        self.tool_output_timeout = tool_output_timeout
        self.enqueue: Enqueue | None = None  # set where a job queue exists
        self._interactive: dict[str, asyncio.Task[AgentRun]] = {}

    # -- creating ------------------------------------------------------------------
    async def create(
        self, principal: Principal, agent_id: str, request: RunRequest, mode: Mode
    ) -> tuple[AgentRun, bool]:
        """The run's row, and whether it is new (False: its idempotency key named an
        existing run, which is returned as it is)."""
        tenant = principal.tenant
        if request.idempotency_key is not None:
            existing = await self.runs.by_idempotency_key(tenant, request.idempotency_key)
            if existing is not None:
                return existing, False
        agent = await self.registry.get(tenant, agent_id)
        if agent is None:
            raise NotFoundError(
                f"The agent '{agent_id}' does not exist or you do not have access to it.",
                param="agent_id",
                code="agent_not_found",
            )
        spec = agent.spec
        if spec.status != "active":
            raise ConflictError(f"The agent '{agent_id}' is disabled.", code="agent_disabled")
        group = self.engine.completions.router.resolve(spec.model)
        if principal.allowed_models is not None and group not in principal.allowed_models:
            raise PermissionDeniedError(
                f"This API key is not allowed to use the model of agent '{agent_id}'.",
                code="model_not_allowed",
            )
        limits = spec.limits.tightened(request.limits)
        new_thread = request.thread_id is None
        thread_id = request.thread_id or new_id("thread")
        if not new_thread and await self.runs.thread(thread_id, tenant=tenant) is None:
            raise NotFoundError(
                f"No thread '{thread_id}'.", param="thread_id", code="thread_not_found"
            )
        now = datetime.now(UTC)
        row = AgentRun(
            id=new_id("run"),
            tenant=tenant,
            api_key_id=principal.key_id,
            agent_id=spec.id,
            agent_version=agent.version,
            agent=spec.definition(),
            thread_id=thread_id,
            status="queued",
            mode=mode,
            input=request.messages(),
            limits=limits.model_dump(mode="json"),
            usage=empty_usage(),
            idempotency_key=request.idempotency_key,
            last_seq=0,
            created_at=now,
            updated_at=now,
        )
        try:
            await self.runs.create(row, new_thread=new_thread)
        except DuplicateRun:
            assert request.idempotency_key is not None
            existing = await self.runs.by_idempotency_key(tenant, request.idempotency_key)
            if existing is None:
                raise
            return existing, False
        if mode == "background":
            if self.enqueue is None:
                raise BadRequestError(
                    "Background runs need the job queue.", code="jobs_unavailable"
                )
            row.job_id = await self.enqueue(row)
            await self.runs.update(row.id, job_id=row.job_id)
        return row, True

    def start(self, row: AgentRun, principal: PrincipalSource) -> asyncio.Task[AgentRun]:
        """Execute an interactive run in this process, in the background of the request."""
        events = EventLog(row.id, self.runs, last_seq=row.last_seq, bus=self.live.bus)
        control = Control()
        self.live.add(row.id, events, control)  # before any await: followers find it
        task = asyncio.create_task(self.execute(row, principal, events, control))
        self._interactive[row.id] = task
        task.add_done_callback(lambda _: self._interactive.pop(row.id, None))
        return task

    # -- executing -----------------------------------------------------------------
    async def execute(
        self,
        row: AgentRun,
        principal: PrincipalSource,
        events: EventLog | None = None,
        control: Control | None = None,
    ) -> AgentRun:
        if events is None or control is None:
            events = EventLog(row.id, self.runs, last_seq=row.last_seq, bus=self.live.bus)
            control = Control()
            self.live.add(row.id, events, control)
        events.start()
        watcher = asyncio.create_task(self._watch(row.id, control))
        try:
            started = datetime.now(UTC)
            if not await self.runs.update(
                row.id, unless=FINISHED, status="in_progress", started_at=started
            ):
                return await self._reread(row)  # cancelled before it started
            row.status, row.started_at = "in_progress", started
            events.emit("run.created", {"run": run_object(row)})
            events.emit("run.status", {"status": "in_progress"})
            state = await self._state(row, principal)
            await self.engine.run(state, events, control, self._waiter(row, events, control))
            await self._finish(row, state, events)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.runs.update(
                    row.id,
                    unless=FINISHED,
                    status="cancelled",
                    stop_reason="cancelled",
                    finished_at=datetime.now(UTC),
                )
            raise
        finally:
            watcher.cancel()
            await events.close()
            self.live.remove(row.id)
        return row

    async def _state(self, row: AgentRun, principal: PrincipalSource) -> RunState:
        spec = AgentSpec.model_validate(row.agent)
        from agents.definitions import AgentLimits

        messages: list[dict[str, Any]] = []
        if spec.instructions:
            messages.append({"role": "system", "content": spec.instructions})
        messages += await self.runs.thread_messages(row.thread_id)
        messages += cast(list[dict[str, Any]], list(row.input))
        return RunState(
            run_id=row.id,
            agent=spec,
            limits=AgentLimits.model_validate(row.limits),
            tenant=row.tenant,
            messages=messages,
            principal=principal,
            new_messages=cast(list[dict[str, Any]], list(row.input)),
        )

    async def _finish(self, row: AgentRun, state: RunState, events: EventLog) -> None:
        usage = state.usage.as_dict()
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "status": state.status,
            "stop_reason": state.stop_reason,
            "output": state.output,
            "usage": usage,
            "error": state.error,
            "required_action": None,
            "finished_at": now,
        }
        for name, value in values.items():
            setattr(row, name, value)
        row.last_seq = values["last_seq"] = events.seq + 1  # the terminal event's
        try:
            await self.runs.add_thread_messages(row.thread_id, row.id, state.new_messages)
        except Exception as exc:  # the answer stands; the thread misses this turn
            log.warning("thread_not_saved", run_id=row.id, error=type(exc).__name__)
        await self.runs.update(row.id, **values)
        kind = {
            "completed": "run.completed",
            "incomplete": "run.incomplete",
            "failed": "run.failed",
            "cancelled": "run.cancelled",
        }[state.status]
        events.emit(kind, {"run": run_object(row)})

    def _waiter(
        self, row: AgentRun, events: EventLog, control: Control
    ) -> Callable[[RunState, list[dict[str, Any]]], Awaitable[dict[str, str]]]:
        async def wait(state: RunState, calls: list[dict[str, Any]]) -> dict[str, str]:
            wanted = {str(c["id"]) for c in calls}
            action: dict[str, Any] = {"type": "submit_tool_outputs", "tool_calls": calls}
            await self.runs.update(
                row.id,
                unless=FINISHED,
                status="requires_action",
                required_action=action,
                tool_outputs=None,
            )
            row.status, row.required_action = "requires_action", action
            for call in calls:
                events.emit(
                    "tool_call.requires_action", {"turn": state.turn - 1, "tool_call": call}
                )
            events.emit("run.status", {"status": "requires_action", "required_action": action})
            deadline = time.monotonic() + self.tool_output_timeout
            while not wanted <= set(control.outputs):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Stop("timeout")
                control.outputs_arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(control.outputs_arrived.wait(), min(left, 1.0))
            outputs = {k: control.outputs.pop(k) for k in wanted}
            await self.runs.update(
                row.id,
                unless=FINISHED,
                status="in_progress",
                required_action=None,
                tool_outputs=None,
            )
            row.status, row.required_action = "in_progress", None
            events.emit("run.status", {"status": "in_progress"})
            return outputs

        return wait

    async def _watch(self, run_id: str, control: Control) -> None:
        """Commands written to the row by another process."""
        while True:
            await asyncio.sleep(COMMAND_POLL_SECONDS)
            with contextlib.suppress(Exception):
                row = await self.runs.get(run_id)
                if row is None:
                    continue
                if row.cancel_mode and row.cancel_mode != control.cancel_mode:
                    control.cancel(row.cancel_mode)
                if row.tool_outputs:
                    new = {k: v for k, v in row.tool_outputs.items() if k not in control.outputs}
                    if new:
                        control.provide({k: str(v) for k, v in new.items()})

    async def _reread(self, row: AgentRun) -> AgentRun:
        return await self.runs.get(row.id) or row

    # -- reading and commands ----------------------------------------------------------
    async def get(self, tenant: str, run_id: str) -> AgentRun:
        row = await self.runs.get(run_id, tenant=tenant)
        if row is None:
            raise NotFoundError(f"No run '{run_id}'.", param="run_id", code="run_not_found")
        return row

    def events(self, run_id: str, after: int) -> AsyncIterator[RunEvent]:
        return follow(self.live, self.runs, run_id, after)

    async def wait_settled(self, run_id: str) -> None:
        """Until the run finishes or waits for client tool outputs."""
        async for event in self.events(run_id, 0):
            if event.terminal:
                return
            if event.type == "run.status" and event.data.get("status") == "requires_action":
                return

    async def cancel(
        self, tenant: str, *, run_id: str | None, idempotency_key: str | None, mode: str
    ) -> AgentRun:
        row = None
        if run_id is not None:
            row = await self.get(tenant, run_id)
        elif idempotency_key is not None:
            row = await self.runs.by_idempotency_key(tenant, idempotency_key)
            if row is None:
                raise NotFoundError(
                    f"No run with the idempotency key '{idempotency_key}'.",
                    param="idempotency_key",
                    code="run_not_found",
                )
        assert row is not None
        if row.status in FINISHED:
            return row  # idempotent: a finished run stays as it ended
        if row.status == "queued" and await self.runs.update(
            row.id,
            unless=("in_progress", "requires_action", *FINISHED),
            status="cancelled",
            stop_reason="cancelled",
            cancel_mode=mode,
            finished_at=datetime.now(UTC),
            last_seq=row.last_seq + 1,
        ):
            fresh = await self._reread(row)
            cancelled = RunEvent(
                fresh.id, fresh.last_seq, "run.cancelled", {"run": run_object(fresh)}
            )
            await self.runs.add_events(fresh.id, [(cancelled.seq, cancelled.type, cancelled.data)])
            if self.live.bus is not None:  # its followers elsewhere: now, not at their next look
                await self.live.bus.publish_final(cancelled)
            return fresh
        await self.runs.update(row.id, unless=FINISHED, cancel_mode=mode)
        control = self.live.controls.get(row.id)
        if control is not None:
            control.cancel(mode)
        return await self._reread(row)

    async def submit_tool_outputs(
        self, tenant: str, run_id: str, outputs: dict[str, str]
    ) -> AgentRun:
        row = await self.get(tenant, run_id)
        action = cast(dict[str, Any], row.required_action or {})
        if row.status != "requires_action":
            raise ConflictError(
                f"The run is {row.status}, not waiting for tool outputs.", code="run_not_waiting"
            )
        pending = {str(c.get("id")) for c in action.get("tool_calls", [])}
        unknown = sorted(set(outputs) - pending)
        if unknown:
            raise BadRequestError(
                f"Unknown tool_call_id(s): {', '.join(unknown)}.",
                param="tool_outputs",
                code="unknown_tool_call",
            )
        merged = {**(row.tool_outputs or {}), **outputs}
        await self.runs.update(row.id, unless=FINISHED, tool_outputs=merged)
        control = self.live.controls.get(row.id)
        if control is not None:
            control.provide(outputs)
        return await self._reread(row)

    async def thread_messages(self, tenant: str, thread_id: str) -> list[dict[str, Any]]:
        if await self.runs.thread(thread_id, tenant=tenant) is None:
            raise NotFoundError(
                f"No thread '{thread_id}'.", param="thread_id", code="thread_not_found"
            )
        return await self.runs.thread_messages(thread_id)

    async def active_runs(self, tenant: str | None = None) -> int:
        return await self.runs.count_active(tenant)

    async def close(self) -> None:
        """Stop: interactive runs are cancelled (their clients are going too); background
        runs are the job queue's to drain."""
        tasks = list(self._interactive.items())
        for run_id, _task in tasks:
            control = self.live.controls.get(run_id)
            if control is not None:
                control.cancel("immediate")
        if tasks:
            await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)


__all__ = ["ACTIVE_RUN", "RunService"]
