"""Run events: numbered per run, delivered live in the process that runs the run,
and stored so that any process can replay them (`after=N`).

The engine only ever calls `EventLog.emit` (no await, no I/O on its path): the event
gets the run's next `seq`, goes to this process's live subscribers at once, and is
written to the database in small batches by the log's writer task (right away after
anything but a text delta, every `FLUSH_SECONDS` for deltas). A log keeps its run's
events in memory while the run lives, so a subscriber in the same process reads what
it missed and then follows the queue with no gap and no duplicate (both happen
without an await in between).

With Redis configured, every event also goes to the run's Redis Stream
(`agents.event_stream`: in order, by a second task of the log, at once for every
event), and a subscriber in another process (a background run on the worker, another
gunicorn worker or instance) reads what is stored, then follows that stream through
the process's one stream reader: live, deduplicated by seq, a gap (a trimmed stream,
a Redis that restarted empty, a lagging subscriber) read from the store. It still
reads the store after `LIVE_CHECK_SECONDS` of silence, then less and less often (an
event the stream lost, a run whose process died): a run waiting for tool outputs
keeps its followers for minutes, and they must not cost the database a query each
every few seconds. With Redis away or frozen it polls the store every
`POLL_SECONDS`-`MAX_POLL_SECONDS`, as it does with no Redis, and goes live again
when the reader is back.

The wire form of an event is `{"type", "run_id", "seq", "ts", ...data}` (`ts`: when the
engine emitted it, epoch seconds); the types are the ones below, shared by every
transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from database.repositories.agents import RunRepository

if TYPE_CHECKING:
    from agents.event_stream import EventBus, Subscription

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
LIVE_WAIT_SECONDS = 1.0  # following a stream: how often to look whether it is still live
LIVE_CHECK_SECONDS = 5.0  # following a stream: the store's safety net, after this silence
MAX_LIVE_CHECK_SECONDS = 60.0  # ... doubling up to this while the store has nothing new
GAP_WAIT_SECONDS = 10.0  # how long a hole in a stream waits for the store to fill it


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

    def __init__(
        self,
        run_id: str,
        runs: RunRepository,
        *,
        last_seq: int = 0,
        bus: EventBus | None = None,
    ) -> None:
        self.run_id = run_id
        self.runs = runs
        self.stream = bus.writer(run_id) if bus is not None else None
        self.seq = last_seq
        self.events: list[RunEvent] = []  # this process's events of the run, in order
        self._unsaved: list[RunEvent] = []
        self._followers: list[_Follower] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"run-events-{self.run_id}")
        if self.stream is not None:
            self.stream.start()

    def emit(self, type: str, data: dict[str, Any]) -> RunEvent:
        assert type in EVENT_TYPES, type
        self.seq += 1
        # `ts`: when the engine emitted it (epoch s), for clients and latency measurement.
        event = RunEvent(self.run_id, self.seq, type, {**data, "ts": round(time.time(), 6)})
        self.events.append(event)
        self._unsaved.append(event)
        for follower in self._followers:
            follower.queue.put_nowait(event)
        if self.stream is not None:
            self.stream.add(event)
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
        writing: list[Awaitable[None]] = [] if self.stream is None else [self.stream.close()]
        if self._writer is not None:
            writing.append(self._writer)
        await asyncio.gather(*writing, return_exceptions=True)  # the store and the stream at once
        for follower in self._followers:
            follower.queue.put_nowait(_END)


_END = RunEvent("", 0, "run.completed", {})  # wakes followers when a log closes early


class LiveRuns:
    """The runs this process is running: their event logs and their controls, and
    the process's run streams (`bus`: None or unconfigured without Redis)."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self.bus = bus
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
) -> AsyncGenerator[RunEvent, None]:
    """The run's events after `after`, then live ones, until its terminal event. A
    caller that stops early closes it (`aclose`), which ends its stream subscription."""
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
        bus = live.bus
        if bus is not None and bus.configured:
            # Closed with this generator, not at its collection: it holds a subscription.
            async with contextlib.aclosing(_elsewhere(live, bus, runs, run_id, last)) as remote:
                async for event in remote:
                    last = event.seq
                    yield event
                    if event.terminal:
                        return
            if run_id in live.logs:
                continue  # it runs here now
            return
        # Not running here, and no Redis: read the store, and poll while the run goes on.
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


async def _elsewhere(
    live: LiveRuns, bus: EventBus, runs: RunRepository, run_id: str, after: int
) -> AsyncGenerator[RunEvent, None]:
    """A run executing in another process: what is stored, then its stream (the store
    polled while the stream is not live), until its terminal event, its end without
    one, or its start in this process (the caller follows its log then)."""
    last = after
    sub: Subscription | None = None
    delay = POLL_SECONDS  # the store's poll while the stream is not live
    check = LIVE_CHECK_SECONDS  # the store's safety net while it is
    try:
        while True:
            found = False
            async for event in _stored(runs, run_id, last, None):
                found = True
                last = event.seq
                yield event
                if event.terminal:
                    return
            if found:
                delay, check = POLL_SECONDS, LIVE_CHECK_SECONDS
            else:
                run = await runs.get(run_id)
                if run is None or (run.status not in _ACTIVE and run.last_seq <= last):
                    return
                delay = min(delay * 2, MAX_POLL_SECONDS)
                if sub is not None and bus.live_available:
                    check = min(check * 2, MAX_LIVE_CHECK_SECONDS)
            if sub is None:  # from what the store has: the stream holds what follows
                sub = bus.subscribe(run_id, last)
            sub.last, checked_at = last, time.monotonic()
            while True:
                if run_id in live.logs:
                    return
                now = time.monotonic()
                if bus.live_available:
                    wait = min(LIVE_WAIT_SECONDS, checked_at + check - now)
                else:
                    wait = checked_at + delay - now
                if wait <= 0:
                    break  # the store's turn
                if sub.queue.empty():
                    try:
                        async with asyncio.timeout(wait):
                            item = await sub.queue.get()
                    except TimeoutError:
                        continue
                else:
                    item = sub.queue.get_nowait()
                if item is None or item.seq <= last:
                    continue  # the reader lost Redis (look again), or delivered already
                if item.seq > last + 1:  # a hole in the stream: the store has it
                    async for missing in _filled(runs, run_id, last, item.seq):
                        last = sub.last = missing.seq
                        yield missing
                        if missing.terminal:
                            return
                last = sub.last = item.seq
                checked_at, check = time.monotonic(), LIVE_CHECK_SECONDS  # silence counts from here
                yield item
                if item.terminal:
                    return
    finally:
        if sub is not None:
            bus.unsubscribe(sub)


async def _filled(
    runs: RunRepository, run_id: str, after: int, before: int
) -> AsyncIterator[RunEvent]:
    """The stored events between `after` and `before`. The store may lag the stream
    by a flush, so it is read again until the hole is filled; after `GAP_WAIT_SECONDS`
    the rest are lost (the process that ran the run went away with them)."""
    deadline = time.monotonic() + GAP_WAIT_SECONDS
    while True:
        async for event in _stored(runs, run_id, after, before):
            after = event.seq
            yield event
        if after >= before - 1:
            return
        if time.monotonic() >= deadline:
            log.warning("run_events_lost", run_id=run_id, after=after, before=before)
            return
        await asyncio.sleep(POLL_SECONDS)


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
