"""Who is watching the interactive runs, so a run nobody follows any more stops.

A WebSocket client's run outlives its socket: the client reconnects (to any worker or
instance) and resumes from its cursor. A run started that way is cancelled only after
`grace` seconds with no subscriber anywhere: here (counted in this process) or on
another process or instance, which says so by refreshing a short Redis key while it
follows the run. Without Redis only this process's subscribers count (a client that
resumes elsewhere within the grace keeps the run only if Redis is there to say so).
Background runs are never watched: they run to their end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import structlog

from agents.events import LiveRuns
from core.infra.redis import ResilientRedis

log = structlog.get_logger("skygate.agents.watchers")
WATCH_TTL_SECONDS = 60  # a remote follower refreshes its mark at least every heartbeat


def _key(run_id: str) -> str:
    return f"skygate:run:{run_id}:watched"


class RunWatchers:
    def __init__(self, redis: ResilientRedis, live: LiveRuns, *, grace: float) -> None:
        self.redis = redis
        self.live = live
        self.grace = grace
        self.local: Counter[str] = Counter()
        self.guarded: set[str] = set()  # runs of this process that stop when unwatched
        self._timers: dict[str, asyncio.Task[None]] = {}

    def guard(self, run_id: str) -> None:
        """`run_id` runs here and stops `grace` seconds after its last watcher leaves."""
        self.guarded.add(run_id)

    def watch(self, run_id: str) -> None:
        self.local[run_id] += 1
        timer = self._timers.pop(run_id, None)
        if timer is not None:
            timer.cancel()

    def unwatch(self, run_id: str) -> None:
        self.local[run_id] -= 1
        if self.local[run_id] > 0:
            return
        del self.local[run_id]
        if run_id not in self.live.controls:  # over (or never here): nothing to stop
            self.guarded.discard(run_id)
            return
        if run_id in self.guarded and run_id not in self._timers:
            self._timers[run_id] = asyncio.create_task(self._expire(run_id))

    async def touch(self, run_ids: list[str]) -> None:
        """Say, for other processes, that runs followed here are still watched."""
        for run_id in run_ids:
            if run_id not in self.live.controls:  # running elsewhere: its owner asks Redis
                await self.redis.command(
                    "SET", _key(run_id), b"1", "EX", WATCH_TTL_SECONDS, fallback=None
                )

    async def _expire(self, run_id: str) -> None:
        try:
            while True:
                await asyncio.sleep(self.grace)
                if self.local[run_id] > 0 or run_id not in self.live.controls:
                    return
                remote = await self.redis.command("EXISTS", _key(run_id), fallback=0)
                if not remote:
                    break
            control = self.live.controls.get(run_id)
            if control is not None:
                log.info("run_unwatched", run_id=run_id, grace=self.grace)
                control.cancel("immediate")
        finally:
            self._timers.pop(run_id, None)
            if self.local[run_id] == 0:
                self.local.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        """The run ended."""
        self.guarded.discard(run_id)
        timer = self._timers.pop(run_id, None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        for timer in list(self._timers.values()):
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
