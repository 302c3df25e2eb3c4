"""One connection's writer: a bounded queue between the run engine and the socket.

The engine never writes to a socket (it emits events; subscriptions push them here).
This sender is the only task that sends, so frames keep their order and a slow
reader only ever slows itself. When the queue grows past `limit` frames, text deltas
of the same run and turn are merged (the merged frame has the last part's `seq` and
says how many it holds in `coalesced`); if that is not enough, or one send stays
blocked for `stall_seconds` (the client stopped reading), the connection closes with
1013 and the client resumes from its cursor. Memory per connection is bounded by
`limit` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from agents.events import EVENT_TYPES
from core.observability import metrics

# The protocol's own frames and the run events (agents.events): metric labels stay bounded.
KNOWN_TYPES = EVENT_TYPES | {
    "session.created",
    "ack",
    "error",
    "pong",
    "heartbeat",
    "server.draining",
    "run.snapshot",
}
YIELD_EVERY = 32  # uvicorn's send does not yield while the socket is writable


def type_label(kind: object) -> str:
    return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "other"


class Sender:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        limit: int,
        stall_seconds: float,
        on_overflow: Callable[[int, str], Awaitable[None]],
    ) -> None:
        self.websocket = websocket
        self.limit = limit
        self.stall_seconds = stall_seconds
        self.on_overflow = on_overflow  # close(code, reason)
        self.queue: deque[tuple[float, dict[str, Any]]] = deque()
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.closed = False
        self.sent = 0

    def push(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        self.queue.append((time.monotonic(), frame))
        if len(self.queue) > self.limit:
            self._coalesce()
            if len(self.queue) > self.limit:
                self.closed = True
                asyncio.ensure_future(
                    self.on_overflow(1013, "slow consumer: resume from your last seq")
                )
                return
        self.wakeup.set()

    def _coalesce(self) -> None:
        merged: deque[tuple[float, dict[str, Any]]] = deque()
        for queued_at, frame in self.queue:
            if merged and _same_delta(merged[-1][1], frame):
                first_at, previous = merged[-1]
                merged[-1] = (
                    first_at,
                    {
                        **previous,
                        "delta": previous["delta"] + frame["delta"],
                        "seq": frame["seq"],
                        "coalesced": previous.get("coalesced", 1) + 1,
                    },
                )
            else:
                merged.append((queued_at, frame))
        self.queue = merged

    async def run(self) -> None:
        """Send until closed; a stall closes the connection with 1013."""
        try:
            while not self.closed:
                if not self.queue:
                    self.drained.set()
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                queued_at, frame = self.queue.popleft()
                metrics.WEBSOCKET_SENDER_LAG.observe(time.monotonic() - queued_at)
                try:
                    async with asyncio.timeout(self.stall_seconds):
                        await self.websocket.send_text(orjson.dumps(frame).decode())
                except TimeoutError:
                    self.closed = True
                    await self.on_overflow(1013, "slow consumer: resume from your last seq")
                    return
                metrics.WEBSOCKET_MESSAGES.labels("out", type_label(frame.get("type"))).inc()
                self.sent += 1
                if self.sent % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        except (WebSocketDisconnect, OSError, RuntimeError):  # the client is gone
            self.closed = True

    async def flush(self, within: float) -> None:
        """Give what is queued a moment to leave (before a close the client should see)."""
        if not self.queue or self.closed:
            return
        self.drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), within)

    def stop(self) -> None:
        self.closed = True
        self.wakeup.set()
        self.drained.set()


def _same_delta(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a.get("type") == "message.delta"
        and b.get("type") == "message.delta"
        and a.get("run_id") == b.get("run_id")
        and a.get("turn") == b.get("turn")
    )


async def quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await call
