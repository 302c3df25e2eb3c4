"""Month-to-date spend per API key, for monthly budgets.

Spend is read from the usage records (written by every worker and instance)
at most every `refresh_seconds` per key, in the background once a value is
known, plus what this worker has added since — so a budget holds across the
fleet within a few seconds without a database round trip per request. After
the first read only rows newer than the last one seen are summed, so a refresh
costs the same on the first day of the month and on the last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from core.observability import metrics
from database.repositories.usage import UsageRepository

log = structlog.get_logger("skygate.budget")
FULL_READ_SECONDS = 60.0


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class _Spend:
    stored: float
    local: float
    read_at: float
    month: datetime
    last_id: int = 0
    full_at: float = 0.0


class SpendTracker:
    def __init__(self, usage: UsageRepository, *, refresh_seconds: float = 5.0) -> None:
        self.usage = usage
        self.refresh_seconds = refresh_seconds
        self._spend: dict[str, _Spend] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reserved: dict[str, float] = {}  # worst cases of calls in flight (agent turns)

    async def _read(self, key_id: str, month: datetime) -> None:
        known = self._spend.get(key_id)
        if known is not None and (
            known.month != month or time.monotonic() - known.full_at > FULL_READ_SECONDS
        ):
            known = None  # a full sum now and then catches rows committed out of id order
        try:
            added, last_id = await self.usage.spend_since(
                key_id, since=month, after_id=known.last_id if known else 0
            )
        except Exception as exc:  # keep the last value; budgets tolerate a stale read
            log.warning("spend_read_failed", error=type(exc).__name__)
            return
        finally:
            self._refreshing.discard(key_id)
        now = time.monotonic()
        stored = (known.stored if known else 0.0) + added
        full_at = known.full_at if known else now
        self._spend[key_id] = _Spend(stored, 0.0, now, month, last_id, full_at)

    async def spent(self, key_id: str) -> float:
        month = month_start()
        entry = self._spend.get(key_id)
        if entry is None or entry.month != month:
            await self._read(key_id, month)
            entry = self._spend.get(key_id)
            if entry is None:
                return self._reserved.get(key_id, 0.0)
        elif (
            time.monotonic() - entry.read_at > self.refresh_seconds
            and key_id not in self._refreshing
        ):
            self._refreshing.add(key_id)
            task = asyncio.create_task(self._read(key_id, month))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return entry.stored + entry.local + self._reserved.get(key_id, 0.0)

    def reserve(self, key_id: str, cost: float) -> None:
        """Count `cost` as spent until `release`: a call's worst case, held while it
        runs, so concurrent calls of the key cannot together overrun its budget."""
        self._reserved[key_id] = self._reserved.get(key_id, 0.0) + cost

    def release(self, key_id: str, cost: float) -> None:
        left = self._reserved.get(key_id, 0.0) - cost
        if left > 1e-12:
            self._reserved[key_id] = left
        else:
            self._reserved.pop(key_id, None)

    def add(self, key_id: str, cost: float) -> None:
        entry = self._spend.get(key_id)
        if entry is not None:
            entry.local += cost

    def forget(self, key_id: str) -> None:
        self._spend.pop(key_id, None)

    async def close(self) -> None:
        """Let background reads finish (a cancelled read would strand a connection)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class BudgetGauge:
    """`tenant_budget_used_ratio`: per tenant, the highest spend / budget among its
    keys whose budget this worker checked this month (the gauge shows the max over
    workers). Budgets belong to keys, and keys are not a metric label (one series
    per key would grow with every key created); a tenant is, and an operator asks
    "which tenant is about to be refused", then finds the key in /api/v1/usage.
    A new month sets every tenant this worker knew back to 0 at its first check."""

    def __init__(self) -> None:
        self._month: datetime | None = None
        self._ratios: dict[str, dict[str, float]] = {}  # tenant label -> key id -> ratio

    def observe(self, *, tenant: str, key_id: str, spent: float, budget: float) -> None:
        month = month_start()
        if month != self._month:
            for label in self._ratios:
                metrics.TENANT_BUDGET_USED.labels(label).set(0.0)
            self._ratios.clear()
            self._month = month
        label = metrics.tenant_label(tenant)
        keys = self._ratios.setdefault(label, {})
        keys[key_id] = spent / budget if budget > 0 else 1.0
        metrics.TENANT_BUDGET_USED.labels(label).set(max(keys.values()))
