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
  minute and an hour limit with headers (two hits and a stats read), and three
  more for a token limit — each round trip costs ~50-100 us of CPU in
  redis-py — so the windows are checked and counted here by one Lua script,
  one round trip per admission, with `limits`' sliding-window-counter formula.
Every Redis call goes through the circuit breaker in `core.infra.redis`; while it is
open each worker enforces its share of each limit (limit / (workers x
instances)) in memory with the same algorithm, and never fails a request.

Failed authentications are counted per client address on the same windows
(`FailureThrottle`): after `AUTH_FAILURES_PER_MINUTE` of them an address gets
429 `auth_throttled` before its credential is looked up.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog

from core.errors import RateLimitError
from core.infra.redis import ResilientRedis
from core.observability import metrics

log = structlog.get_logger("skygate.limits")

_FAILED = object()
KEY_PREFIX = "skygate:limits"
MINUTE, HOUR = 60, 3600

# KEYS: one base key per limit. ARGV: limit, window seconds, cost (per key).
# Admits only if every limit has room for its cost, then counts all of them.
# Returns {allowed, index of the exceeded limit or 0, remaining, reset_at, wait}
# where remaining/reset_at describe the first limit (or the exceeded one).
SLIDING_WINDOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local current, weighted = {}, {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 * i - 2])
  local window, cost = tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local index = math.floor(now / window)
  local key = KEYS[i] .. ':' .. index
  local count = math.max(tonumber(redis.call('GET', key) or '0'), 0)
  local previous = math.max(tonumber(redis.call('GET', KEYS[i] .. ':' .. (index - 1)) or '0'), 0)
  local elapsed = now - index * window
  local used = previous * (window - elapsed) / window + count
  if used + cost > limit then
    local wait
    if count + cost > limit then
      wait = (window - elapsed) + window * (1 - (limit - cost) / math.max(count, 1))
    else
      wait = window * (1 - (limit - cost - count) / math.max(previous, 1)) - elapsed
    end
    return {0, i, 0, tostring((index + 1) * window), tostring(math.max(wait, 0))}
  end
  current[i], weighted[i] = key, used
end
for i = 1, #KEYS do
  redis.call('INCRBY', current[i], ARGV[3 * i])
  redis.call('EXPIRE', current[i], 2 * tonumber(ARGV[3 * i - 1]))
end
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
return {1, 0, math.floor(limit - weighted[1] - cost),
        tostring((math.floor(now / window) + 1) * window), '0'}
"""

# KEYS[1]: base key. ARGV: amount (may be negative), window seconds.
ADJUST_LUA = """
local clock = redis.call('TIME')
local window = tonumber(ARGV[2])
local key = KEYS[1] .. ':' .. math.floor(tonumber(clock[1]) / window)
redis.call('INCRBY', key, ARGV[1])
redis.call('EXPIRE', key, 2 * window)
return 1
"""

Limit = tuple[str, int, int, int]  # base key, limit, window seconds, cost


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

    def request_headers(self) -> dict[str, str]:
        """`X-RateLimit-*` for a request-rate decision."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(int(self.reset_at)),
        }

    def token_headers(self) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*-tokens` for a token decision."""
        return {
            "x-ratelimit-limit-tokens": str(self.limit),
            "x-ratelimit-remaining-tokens": str(max(self.remaining, 0)),
            "x-ratelimit-reset-tokens": f"{max(self.reset_at - time.time(), 0):.0f}s",
        }


# `Decision.exceeded` -> the `limit` label of `rate_limit_refusals_total`.
_LIMIT_NAMES = {
    "minute": "requests_per_minute",
    "hour": "requests_per_hour",
    "tokens": "tokens_per_minute",
}


def rate_limit_error(decision: Decision, *, limit_key: str) -> RateLimitError:
    """The 429 for a refused decision: counted, logged once (never the credential)."""
    metrics.SECURITY_EVENTS.labels("rate_limited").inc()
    metrics.RATE_LIMITED.labels(_LIMIT_NAMES.get(decision.exceeded or "minute", "other")).inc()
    log.info("rate_limited", limit_key=limit_key, window=decision.exceeded, limit=decision.limit)
    tokens = decision.exceeded == "tokens"
    what, per = ("tokens", "minute") if tokens else ("requests", decision.exceeded or "minute")
    headers = decision.token_headers() if tokens else decision.request_headers()
    return RateLimitError(
        f"Rate limit reached for {what}: {decision.limit} per {per}. "
        f"Retry after {decision.retry_after} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(decision.retry_after), **headers},
    )


def sliding_window(
    counts: dict[str, int], now: float, limits: list[Limit]
) -> tuple[bool, int, int, float, float]:
    """The Lua script's algorithm, in memory: (allowed, exceeded index (1-based) or 0,
    remaining, reset_at, wait)."""
    checked = []
    for position, (base, limit, window, cost) in enumerate(limits, start=1):
        index = math.floor(now / window)
        key = f"{base}:{index}"
        count = max(counts.get(key, 0), 0)
        previous = max(counts.get(f"{base}:{index - 1}", 0), 0)
        elapsed = now - index * window
        used = previous * (window - elapsed) / window + count
        if used + cost > limit:
            if count + cost > limit:
                wait = (window - elapsed) + window * (1 - (limit - cost) / max(count, 1))
            else:
                wait = window * (1 - (limit - cost - count) / max(previous, 1)) - elapsed
            return False, position, 0, (index + 1) * window, max(wait, 0.0)
        checked.append((key, used, index, window, limit, cost))
    for key, *_, cost in checked:
        counts[key] = counts.get(key, 0) + cost
    _, used, index, window, limit, cost = checked[0]
    return True, 0, math.floor(limit - used - cost), (index + 1) * window, 0.0


class _LocalWindows:
    """In-memory counters for the sliding windows, pruned as windows pass."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.pruned_at = 0.0

    def check(self, limits: list[Limit]) -> tuple[bool, int, int, float, float]:
        now = time.time()
        if now - self.pruned_at > MINUTE:
            self._prune(now)
        return sliding_window(self.counts, now, limits)

    def adjust(self, base: str, amount: int, window: int) -> None:
        key = f"{base}:{math.floor(time.time() / window)}"
        self.counts[key] = self.counts.get(key, 0) + amount

    def _prune(self, now: float) -> None:
        self.pruned_at = now
        keep = {}
        for key, count in self.counts.items():
            base, _, index = key.rpartition(":")
            window = HOUR if base.endswith(":hour") else MINUTE  # tokens: per minute
            if int(index) >= math.floor(now / window) - 1:
                keep[key] = count
        self.counts = keep


class RateLimiter:
    def __init__(self, redis: ResilientRedis, *, share: int) -> None:
        self.redis = redis
        self.share = max(1, share)
        self.local = _LocalWindows()
        self._check: Any = None
        self._adjust: Any = None
        if redis.configured and redis.client is not None:
            self._check = redis.client.register_script(SLIDING_WINDOW_LUA)
            self._adjust = redis.client.register_script(ADJUST_LUA)

    @property
    def distributed(self) -> bool:
        """Configured to share counters through Redis."""
        return self._check is not None

    @property
    def backend(self) -> str:
        return "redis" if self.distributed and self.redis.usable else "local"

    def _local_amount(self, amount: int) -> int:
        return max(1, amount // self.share)

    async def _admit(self, limits: list[Limit], names: tuple[str, ...]) -> Decision:
        result: Any = _FAILED
        if self._check is not None:
            script = self._check
            keys = [base for base, *_ in limits]
            args = [value for _, limit, window, cost in limits for value in (limit, window, cost)]
            result = await self.redis.script(script, keys, args, _FAILED)
        if result is _FAILED:
            limits = [
                (base, self._local_amount(limit), window, min(cost, self._local_amount(limit)))
                for base, limit, window, cost in limits
            ]
            result = self.local.check(limits)
        allowed, exceeded, remaining, reset_at, wait = result
        if allowed:
            return Decision(True, limits[0][1], int(remaining), float(reset_at))
        position = int(exceeded) - 1
        return Decision(
            False,
            limits[position][1],
            0,
            float(reset_at),
            exceeded=names[position],
            wait=float(wait),
        )

    async def admit(self, key: str, *, per_minute: int, per_hour: int) -> Decision:
        base = f"{KEY_PREFIX}:req:{key}"
        return await self._admit(
            [(f"{base}:minute", per_minute, MINUTE, 1), (f"{base}:hour", per_hour, HOUR, 1)],
            ("minute", "hour"),
        )

    async def admit_tokens(self, key: str, *, per_minute: int, estimate: int) -> Decision:
        cost = max(0, min(estimate, per_minute))
        return await self._admit(
            [(f"{KEY_PREFIX}:tok:{key}", per_minute, MINUTE, cost)], ("tokens",)
        )

    async def settle_tokens(self, key: str, *, per_minute: int, estimate: int, actual: int) -> None:
        """Correct the admission estimate by the real usage."""
        delta = actual - min(estimate, per_minute)
        if delta == 0:
            return
        base = f"{KEY_PREFIX}:tok:{key}"
        if self._adjust is not None:
            script = self._adjust
            done = await self.redis.script(script, [base], [delta, MINUTE], _FAILED)
            if done is not _FAILED:
                return
        self.local.adjust(base, delta, MINUTE)

    async def failures_allow_one_more(self, key: str, *, per_minute: int) -> Decision:
        """Whether one more failure of `key` fits in `per_minute`, counting nothing:
        limit - 1 at cost 0 refuses exactly when limit at cost 1 would (used + 1 >
        limit), and gives the same wait."""
        return await self._admit(
            [(f"{KEY_PREFIX}:fail:{key}", per_minute - 1, MINUTE, 0)], ("failures",)
        )

    async def count_failure(self, key: str) -> None:
        """Count one failure of `key` in the current minute (never refused)."""
        base = f"{KEY_PREFIX}:fail:{key}"
        if self._adjust is not None:
            done = await self.redis.script(self._adjust, [base], [1, MINUTE], _FAILED)
            if done is not _FAILED:
                return
        self.local.adjust(base, 1, MINUTE)


SUSPECT_SECONDS = 2 * MINUTE  # a failure weighs on the sliding window for up to two minutes
SUSPECTS = 10_000  # ~1.5 MB at most; past it the oldest suspects are forgotten first


@lru_cache(maxsize=4096)
def _ipv6_bucket(address: str) -> str:
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"


def failure_bucket(address: str) -> str:
    """Whose failures an address counts towards: an IPv6 client by its /64 (one
    subscriber's usual allocation, all of it free to rotate through), anything
    else by itself."""
    return _ipv6_bucket(address) if ":" in address else address


class FailureThrottle:
    """Failed authentications per client address, across every worker.

    A request that authenticates pays nothing: only a failure goes to Redis (one
    round trip, counting it), and only an address that failed on this worker in
    the last two minutes is checked before its credential is read (one round
    trip) — and, once refused, not again until its Retry-After has passed. Each
    worker learns of an address from its own first failure, and a check and its
    count are separate round trips, so an address gets at most
    AUTH_FAILURES_PER_MINUTE + (its requests in flight - 1) + (workers - 1)
    failures a minute: 10 + 3 + 1 at most, 12 seen, for 4 concurrent connections
    on 2 workers (tests/security/test_auth_throttle.py).
    """

    def __init__(self, limiter: RateLimiter, *, per_minute: int) -> None:
        self.limiter = limiter
        self.per_minute = per_minute
        # address -> (forget at, refused until), both time.monotonic()
        self._suspects: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def check(self, address: str) -> None:
        """429 `auth_throttled` when `address` is over its failures."""
        address = failure_bucket(address)
        entry = self._suspects.get(address)
        if entry is None:
            return
        now = time.monotonic()
        forget_at, refused_until = entry
        if forget_at <= now:
            del self._suspects[address]
            return
        if refused_until > now:
            raise self._error(math.ceil(refused_until - now))
        decision = await self.limiter.failures_allow_one_more(address, per_minute=self.per_minute)
        if decision.allowed:
            return
        retry_after = decision.retry_after
        self._suspects[address] = (max(forget_at, now + retry_after), now + retry_after)
        log.warning("auth_throttled", client=address, retry_after=retry_after)
        raise self._error(retry_after)

    async def failed(self, address: str) -> None:
        """Count a refused credential from `address`."""
        address = failure_bucket(address)
        refused_until = self._suspects.pop(address, (0.0, 0.0))[1]
        self._suspects[address] = (time.monotonic() + SUSPECT_SECONDS, refused_until)
        while len(self._suspects) > SUSPECTS:
            self._suspects.popitem(last=False)
        await self.limiter.count_failure(address)

    def _error(self, retry_after: int) -> RateLimitError:
        metrics.SECURITY_EVENTS.labels("auth_throttled").inc()
        metrics.RATE_LIMITED.labels("auth_failures").inc()
        return RateLimitError(
            "Too many failed authentication attempts from this address. "
            f"Retry after {retry_after} s.",
            code="auth_throttled",
            headers={"Retry-After": str(retry_after)},
        )
