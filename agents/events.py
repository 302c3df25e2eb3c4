"""Run events: numbered per run, delivered live in the process that runs the run,
and stored so that any process can replay them (`after=N`).

The engine only ever calls `EventLog.emit` (no await, no I/O on its path): the event
gets the run's next `seq`, goes to this process's live subscribers at once, and is
written to the database in small batches by the log's writer task (right away after
anything but a text delta, every `FLUSH_SECONDS` for deltas). A log keeps its run's
events in memory while the run lives, so a subscriber in the same process reads what
it missed and then follows the queue with no gap and no duplicate (both happen
without an await in between). A subscriber in another process (a background run on
the worker, or another gunicorn worker) polls the stored events; the WebSocket issue
replaces that poll with a per-run Redis Stream.

The wire form of an event is `{"type", "run_id", "seq", ...data}`; the types are
the ones below, shared by every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from database.repositories.agents import RunRepository

log = structlog.get_logger("skygate.agents.events")

EVENT_TYPES = frozenset(
    {
        "run.created",
        "run.status",
        "message.delta",
        "message.completed",
        "tool_call.created",
        "tool_call.completed",
        "tool_call.requires_action",
        "usage.updated",
        "run.completed",
        "run.incomplete",
        "run.failed",
        "run.cancelled",
    }
)
TERMINAL = frozenset({"run.completed", "run.incomplete", "run.failed", "run.cancelled"})
FLUSH_SECONDS = 0.25
POLL_SECONDS = 0.25  # a follower in another process than the run's reads this often
MAX_POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunEvent:
    run_id: str
    seq: int
    type: str
    data: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"type": self.type, "run_id": self.run_id, "seq": self.seq, **self.data}

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


@dataclass(slots=True)
class _Follower:
    queue: asyncio.Queue[RunEvent] = field(default_factory=asyncio.Queue)


class EventLog:
    """The events of one run, in the process that runs it."""

    def __init__(self, run_id: str, runs: RunRepository, *, last_seq: int = 0) -> None:
        self.run_id = run_id
        self.runs = runs
        self.seq = last_seq
        self.events: list[RunEvent] = []  # this process's events of the run, in order
        self._unsaved: list[RunEvent] = []
        self._followers: list[_Follower] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"run-events-{self.run_id}")

    def emit(self, type: str, data: dict[str, Any]) -> RunEvent:
        assert type in EVENT_TYPES, type
        self.seq += 1
        event = RunEvent(self.run_id, self.seq, type, data)
        self.events.append(event)
        self._unsaved.append(event)
        for follower in self._followers:
            follower.queue.put_nowait(event)
        if type != "message.delta":
            self._wakeup.set()
        return event

    def follow(self, after: int) -> tuple[list[RunEvent], _Follower]:
        """What this log holds after `after`, and a queue of what comes next."""
        follower = _Follower()
        self._followers.append(follower)
        first = self.events[0].seq if self.events else self.seq + 1
        start = max(after + 1 - first, 0)
        return self.events[start:], follower

    def unfollow(self, follower: _Follower) -> None:
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)

    async def _write_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), FLUSH_SECONDS)
            self._wakeup.clear()
            await self.flush()
            if self._closing and not self._unsaved:
                return

    async def flush(self) -> None:
        batch, self._unsaved = self._unsaved, []
        if not batch:
            return
        try:
            await self.runs.add_events(self.run_id, [(e.seq, e.type, e.data) for e in batch])
        except Exception as exc:  # the database away: keep them for the next flush
            log.warning("run_events_not_saved", run_id=self.run_id, error=type(exc).__name__)
            self._unsaved = batch + self._unsaved
            if self._closing:
                raise

    async def close(self) -> None:
        """Write what is left; the run's events are all stored when this returns
        (or the database is away, which is logged)."""
        self._closing = True
        self._wakeup.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        for follower in self._followers:
            follower.queue.put_nowait(_END)


_END = RunEvent("", 0, "run.completed", {})  # wakes followers when a log closes early


class LiveRuns:
    """The runs this process is running: their event logs and their controls."""

    def __init__(self) -> None:
        self.logs: dict[str, EventLog] = {}
        self.controls: dict[str, Any] = {}  # run id -> agents.state.Control

    def add(self, run_id: str, events: EventLog, control: Any) -> None:
        self.logs[run_id] = events
        self.controls[run_id] = control

    def remove(self, run_id: str) -> None:
        self.logs.pop(run_id, None)
        self.controls.pop(run_id, None)

    def __len__(self) -> int:
        return len(self.logs)


async def follow(
    live: LiveRuns, runs: RunRepository, run_id: str, after: int
) -> AsyncIterator[RunEvent]:
    """The run's events after `after`, then live ones, until its terminal event."""
    last = after
    delay = POLL_SECONDS
    while True:
        local = live.logs.get(run_id)
        if local is not None:
            backlog, follower = local.follow(last)
            try:
                if backlog and backlog[0].seq > last + 1:  # trimmed: the start is stored
                    async for event in _stored(runs, run_id, last, backlog[0].seq):
                        last = event.seq
                        yield event
                for event in backlog:
                    last = event.seq
                    yield event
                    if event.terminal:
                        return
                while True:
                    event = await follower.queue.get()
                    if event is _END:
                        break  # the log closed without a terminal event: read the store
                    if event.seq <= last:
                        continue
                    last = event.seq
                    yield event
                    if event.terminal:
                        return
            finally:
                local.unfollow(follower)
            continue
        # Not running here: read the store, and poll while the run goes on elsewhere.
        found = False
        async for event in _stored(runs, run_id, last, None):
            found = True
            last = event.seq
            yield event
            if event.terminal:
                return
        if found:
            delay = POLL_SECONDS
        else:
            run = await runs.get(run_id)
            if run is None or (run.status not in _ACTIVE and run.last_seq <= last):
                return
            delay = min(delay * 2, MAX_POLL_SECONDS)
        if run_id not in live.logs:
            await asyncio.sleep(delay)


_ACTIVE = ("queued", "in_progress", "requires_action")


async def _stored(
    runs: RunRepository, run_id: str, after: int, before: int | None
) -> AsyncIterator[RunEvent]:
    while True:
        rows = await runs.events_after(run_id, after)
        for seq, kind, data in rows:
            if before is not None and seq >= before:
                return
            after = seq
            yield RunEvent(run_id, seq, kind, data)
        if len(rows) < 500:
            return
