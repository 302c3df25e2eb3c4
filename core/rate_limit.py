"""Rate limits per principal: requests per minute and per hour, and LLM tokens
per minute (estimated at admission from `max_tokens` and the prompt, then
corrected by the real usage).

Request limits use the sliding window counter of `limits` (the engine slowapi
is built on): the current fixed window's count plus the previous window's,
weighted by how much of it still overlaps the sliding window. It is O(1), exact
within a window, and smooth across window edges.

Counters live in Redis, so N workers x M instances enforce one limit. Two
narrow departures from slowapi/`limits`, both measured (docs/PERFORMANCE.md):
- slowapi calls `limits`' *synchronous* Redis storage from inside the event
  loop, so a hung Redis would stall the whole worker for every request; and
- `limits`' asyncio API needs three Redis round trips per request for a
  minute and an hour limit with headers (two hits and a stats read) — each
  round trip costs ~50-100 us of CPU in redis-py — so both windows are checked
  and counted here by one Lua script, in one round trip, with the same formula.
Every Redis call goes through the circuit breaker in `core.redis`; while it is
open each worker enforces its share of each limit (limit / (workers x
instances)) in memory with the same algorithm, and never fails a request.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter

from core.redis import ResilientRedis

_FAILED = object()
KEY_PREFIX = "skygate:limits"
MINUTE, HOUR = 60, 3600

# KEYS: one base key per limit. ARGV: limit, window seconds (per key).
# Returns {allowed, index of the exceeded limit or 0, remaining, reset_at, retry_after}
# where remaining/reset_at describe the first limit (or the exceeded one).
SLIDING_WINDOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local current, weighted = {}, {}
for i = 1, #KEYS do
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local index = math.floor(now / window)
  local key = KEYS[i] .. ':' .. index
  local count = tonumber(redis.call('GET', key) or '0')
  local previous = tonumber(redis.call('GET', KEYS[i] .. ':' .. (index - 1)) or '0')
  local elapsed = now - index * window
  local used = previous * (window - elapsed) / window + count
  if used + 1 > limit then
    local wait
    if count + 1 > limit then
      wait = (window - elapsed) + window * (1 - (limit - 1) / math.max(count, 1))
    else
      wait = window * (1 - (limit - 1 - count) / math.max(previous, 1)) - elapsed
    end
    return {0, i, 0, tostring((index + 1) * window), tostring(math.max(wait, 0))}
  end
  current[i], weighted[i] = key, used
end
for i = 1, #KEYS do
  redis.call('INCR', current[i])
  redis.call('EXPIRE', current[i], 2 * tonumber(ARGV[2 * i]))
end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
return {1, 0, math.floor(limit - weighted[1] - 1),
        tostring((math.floor(now / window) + 1) * window), '0'}
"""


@dataclass(slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    exceeded: str | None = None  # "minute" | "hour" | "tokens"
    wait: float = 0.0

    @property
    def retry_after(self) -> int:
        wait = self.wait or (self.reset_at - time.time())
        return max(1, math.ceil(wait))


def sliding_window(
    counts: dict[str, int], now: float, limits: list[tuple[str, int, int]]
) -> tuple[bool, int, int, float, float]:
    """The Lua script's algorithm, in memory: (allowed, exceeded index (1-based) or 0,
    remaining, reset_at, wait)."""
    checked = []
    for position, (base, limit, window) in enumerate(limits, start=1):
        index = math.floor(now / window)
        key = f"{base}:{index}"
        count = counts.get(key, 0)
        previous = counts.get(f"{base}:{index - 1}", 0)
        elapsed = now - index * window
        used = previous * (window - elapsed) / window + count
        if used + 1 > limit:
            if count + 1 > limit:
                wait = (window - elapsed) + window * (1 - (limit - 1) / max(count, 1))
            else:
                wait = window * (1 - (limit - 1 - count) / max(previous, 1)) - elapsed
            return False, position, 0, (index + 1) * window, max(wait, 0.0)
        checked.append((key, used, index, window, limit))
    for key, *_ in checked:
        counts[key] = counts.get(key, 0) + 1
    _, used, index, window, limit = checked[0]
    return True, 0, math.floor(limit - used - 1), (index + 1) * window, 0.0


class _LocalWindows:
    """In-memory counters for the sliding windows, pruned as windows pass."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.pruned_at = 0.0

    def check(self, limits: list[tuple[str, int, int]]) -> tuple[bool, int, int, float, float]:
        now = time.time()
        if now - self.pruned_at > MINUTE:
            self._prune(now)
        return sliding_window(self.counts, now, limits)

    def _prune(self, now: float) -> None:
        self.pruned_at = now
        keep = {}
        for key, count in self.counts.items():
            base, _, index = key.rpartition(":")
            window = HOUR if base.endswith(":hour") else MINUTE
            if int(index) >= math.floor(now / window) - 1:
                keep[key] = count
        self.counts = keep


class RateLimiter:
    def __init__(self, redis: ResilientRedis, *, share: int) -> None:
        self.redis = redis
        self.share = max(1, share)
        self.local_windows = _LocalWindows()
        self.local_tokens = FixedWindowRateLimiter(MemoryStorage())
        self.local_token_storage = self.local_tokens.storage
        self.shared_tokens: FixedWindowRateLimiter | None = None
        self._script: Any = None
        if redis.configured and redis.pool is not None and redis.client is not None:
            storage = RedisStorage(
                "async+redis://localhost:6379",  # placeholder: the pool decides
                implementation="redispy",
                connection_pool=redis.pool,  # type: ignore[arg-type]  # limits types **options narrowly
                key_prefix=KEY_PREFIX,
            )
            self.shared_tokens = FixedWindowRateLimiter(storage)
            self._script = redis.client.register_script(SLIDING_WINDOW_LUA)

    @property
    def distributed(self) -> bool:
        """Configured to share counters through Redis."""
        return self._script is not None

    @property
    def backend(self) -> str:
        return "redis" if self.distributed and self.redis.usable else "local"

    def _local_amount(self, amount: int) -> int:
        return max(1, amount // self.share)

    async def admit(self, key: str, *, per_minute: int, per_hour: int) -> Decision:
        base = f"{KEY_PREFIX}:req:{key}"
        result: Any = _FAILED
        if self._script is not None:
            script = self._script
            result = await self.redis.run(
                lambda _: script(
                    keys=[f"{base}:minute", f"{base}:hour"],
                    args=[per_minute, MINUTE, per_hour, HOUR],
                ),
                _FAILED,
            )
        if result is _FAILED:
            minute, hour = self._local_amount(per_minute), self._local_amount(per_hour)
            result = self.local_windows.check(
                [(f"{base}:minute", minute, MINUTE), (f"{base}:hour", hour, HOUR)]
            )
            limits = (minute, hour)
        else:
            limits = (per_minute, per_hour)
        allowed, exceeded, remaining, reset_at, wait = result
        if allowed:
            return Decision(True, limits[0], int(remaining), float(reset_at))
        position = int(exceeded) - 1
        return Decision(
            False,
            limits[position],
            0,
            float(reset_at),
            exceeded=("minute", "hour")[position],
            wait=float(wait),
        )

    async def _tokens(self, operation: Any) -> Any:
        """`operation(limiter, local)` on Redis, or locally with the per-worker share."""
        if self.shared_tokens is not None:
            shared = self.shared_tokens
            result = await self.redis.run(lambda _: operation(shared, False), _FAILED)
            if result is not _FAILED:
                return result
        return await operation(self.local_tokens, True)

    async def admit_tokens(self, key: str, *, per_minute: int, estimate: int) -> Decision:
        async def check(limiter: FixedWindowRateLimiter, local: bool) -> Decision:
            item = RateLimitItemPerMinute(self._local_amount(per_minute) if local else per_minute)
            cost = max(0, min(estimate, item.amount))
            allowed = await limiter.hit(item, key, cost=cost)
            if not allowed and cost:
                await limiter.storage.incr(item.key_for(key), item.get_expiry(), amount=-cost)
            stats = await limiter.get_window_stats(item, key)
            return Decision(
                allowed,
                item.amount,
                stats.remaining,
                stats.reset_time,
                exceeded=None if allowed else "tokens",
            )

        decision: Decision = await self._tokens(check)
        return decision

    async def settle_tokens(self, key: str, *, per_minute: int, estimate: int, actual: int) -> None:
        """Correct the admission estimate by the real usage."""
        delta = actual - min(estimate, per_minute)
        if delta == 0:
            return

        async def correct(limiter: FixedWindowRateLimiter, local: bool) -> None:
            item = RateLimitItemPerMinute(self._local_amount(per_minute) if local else per_minute)
            await limiter.storage.incr(item.key_for(key), item.get_expiry(), amount=delta)

        await self._tokens(correct)
