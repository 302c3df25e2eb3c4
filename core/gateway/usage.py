"""Usage accounting written in batches, off the request path.

`record()` never waits: it appends to a bounded in-memory queue (dropping, and
counting the drop, if the database falls far behind). A background task writes
the queue to `usage_records` every `USAGE_FLUSH_SECONDS` or when a batch fills,
and once more at shutdown. A database outage delays accounting; it never fails
or slows a request. The rows are written by `database.repositories.usage` (one
binary COPY per batch on PostgreSQL). A record's `estimated` says its tokens are the gateway's
estimate (`core.gateway.ledger`), not the provider's figure.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any

import structlog

from core.observability import metrics
from database.repositories.usage import UsageRepository

log = structlog.get_logger("skygate.usage")

MAX_QUEUE = 50_000
BATCH = 500


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    tenant: str
    api_key_id: str | None
    model_group: str
    provider: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cache_status: str
    outcome: str
    estimated: bool = False  # tokens estimated by the gateway, not reported by the provider
    agent_id: str | None = None  # an agent run's call: its agent, run and turn
    run_id: str | None = None
    turn: int | None = None
    created_at: datetime | None = None


_EVENT_FIELDS = tuple(f.name for f in fields(UsageEvent))  # the columns, in row order


class UsageRecorder:
    def __init__(self, repository: UsageRepository, *, flush_seconds: float) -> None:
        self.repository = repository
        self.flush_seconds = flush_seconds
        self.queue: list[UsageEvent] = []
        self.wakeup = asyncio.Event()
        self._flushing = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.failing = False
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="usage-writer")

    def record(self, event: UsageEvent) -> None:
        if len(self.queue) >= MAX_QUEUE:
            metrics.USAGE_DROPPED.inc()
            return
        event.created_at = event.created_at or datetime.now(UTC)
        self.queue.append(event)
        if len(self.queue) >= BATCH:
            self.wakeup.set()

    async def _run(self) -> None:
        while not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.flush_seconds)
            self.wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued now, in batches. What arrives meanwhile waits for
        the next flush: chasing it would write a few rows at a time for as long as
        requests keep coming (one statement per handful of requests under load)."""
        async with self._flushing:  # one at a time: a caller's flush ends after the one running
            await self._flush()

    async def _flush(self) -> None:
        pending = len(self.queue)
        while pending > 0 and self.queue:
            size = min(BATCH, pending)
            batch, self.queue = self.queue[:size], self.queue[size:]
            pending -= size
            try:
                await self._write(batch)
            except Exception as exc:  # database down: keep the batch, try again later
                self.queue = batch + self.queue
                if not self.failing:
                    log.warning(
                        "usage_write_failed", error=type(exc).__name__, pending=len(self.queue)
                    )
                    self.failing = True
                return
            if self.failing:
                log.warning("usage_write_recovered")
                self.failing = False
            metrics.USAGE_WRITTEN.inc(len(batch))

    async def _write(self, batch: list[UsageEvent]) -> None:
        # (dataclasses.astuple deep-copies; the fields are flat values)
        rows = [tuple(getattr(event, name) for name in _EVENT_FIELDS) for event in batch]
        await self.repository.insert(_EVENT_FIELDS, rows)

    async def close(self) -> None:
        """Write what is queued and stop. The writer is asked to stop, not cancelled:
        cancelling it mid-insert would strand a database connection."""
        self.stopping = True
        self.wakeup.set()
        if self.task is not None:
            await self.task
        await self.flush()

    async def summary(
        self, *, tenant: str | None, since: date, until: date
    ) -> list[dict[str, Any]]:
        """Totals by day (UTC), model group and tenant (one tenant, or all for
        admins), including what this worker has queued but not yet written."""
        await self.flush()
        return await self.repository.summary(tenant=tenant, since=since, until=until)
