"""Rate limits per principal: requests per minute and per hour (moving window,
exact) and LLM tokens per minute (fixed window, estimated at admission from
`max_tokens` and the prompt, then corrected by the real usage).

Counters live in Redis, so N workers x M instances enforce one limit. This
uses `limits` — the engine slowapi is built on — through its asyncio API,
because slowapi calls `limits`' *synchronous* Redis storage from inside the
event loop: a hung Redis would stall the whole worker for every request.
Here every Redis call goes through the circuit breaker in `core.redis`; while
it is open each worker enforces its share of each limit (limit / (workers x
instances)) in memory, logs the change once, and never fails a request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from core.redis import ResilientRedis

_FAILED = object()
KEY_PREFIX = "skygate:limits"


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    exceeded: str | None = None  # "minute" | "hour" | "tokens"
    token_limit: int | None = None
    token_remaining: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))


class _Backend:
    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = FixedWindowRateLimiter(storage)


class RateLimiter:
    def __init__(self, redis: ResilientRedis, *, share: int) -> None:
        self.redis = redis
        self.share = max(1, share)
        self.local = _Backend(MemoryStorage())
        self.shared: _Backend | None = None
        if redis.configured and redis.pool is not None:
            storage = RedisStorage(
                "async+redis://localhost:6379",  # placeholder: the pool decides
                implementation="redispy",
                connection_pool=redis.pool,  # type: ignore[arg-type]  # limits types **options narrowly
                key_prefix=KEY_PREFIX,
            )
            self.shared = _Backend(storage)

    @property
    def backend(self) -> str:
        return "redis" if self.shared is not None and self.redis.usable else "local"

    def _local_amount(self, amount: int) -> int:
        return max(1, amount // self.share)

    async def _run(self, operation: Any) -> Any:
        """`operation(backend, scale)` on Redis, or locally with the per-worker share."""
        if self.shared is not None:
            shared = self.shared
            result = await self.redis.run(lambda _: operation(shared, False), _FAILED)
            if result is not _FAILED:
                return result
        return await operation(self.local, True)

    async def admit(self, key: str, *, per_minute: int, per_hour: int) -> Decision:
        async def check(backend: _Backend, local: bool) -> Decision:
            minute = RateLimitItemPerMinute(self._local_amount(per_minute) if local else per_minute)
            hour = RateLimitItemPerHour(self._local_amount(per_hour) if local else per_hour)
            for name, item in (("minute", minute), ("hour", hour)):
                if not await backend.requests.hit(item, key):
                    stats = await backend.requests.get_window_stats(item, key)
                    return Decision(False, item.amount, 0, stats.reset_time, exceeded=name)
            stats = await backend.requests.get_window_stats(minute, key)
            return Decision(True, minute.amount, stats.remaining, stats.reset_time)

        decision: Decision = await self._run(check)
        return decision

    async def admit_tokens(self, key: str, *, per_minute: int, estimate: int) -> Decision:
        async def check(backend: _Backend, local: bool) -> Decision:
            item = RateLimitItemPerMinute(self._local_amount(per_minute) if local else per_minute)
            cost = max(0, min(estimate, item.amount))
            allowed = await backend.tokens.hit(item, key, cost=cost)
            if not allowed and cost:
                await backend.storage.incr(item.key_for(key), item.get_expiry(), amount=-cost)
            stats = await backend.tokens.get_window_stats(item, key)
            return Decision(
                allowed,
                item.amount,
                stats.remaining,
                stats.reset_time,
                exceeded=None if allowed else "tokens",
                token_limit=item.amount,
                token_remaining=stats.remaining,
            )

        decision: Decision = await self._run(check)
        return decision

    async def settle_tokens(self, key: str, *, per_minute: int, estimate: int, actual: int) -> None:
        """Correct the admission estimate by the real usage."""
        delta = actual - min(estimate, per_minute)
        if delta == 0:
            return

        async def correct(backend: _Backend, local: bool) -> None:
            item = RateLimitItemPerMinute(self._local_amount(per_minute) if local else per_minute)
            await backend.storage.incr(item.key_for(key), item.get_expiry(), amount=delta)

        await self._run(correct)
