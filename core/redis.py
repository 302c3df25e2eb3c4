"""Optional Redis: one asyncio pool behind a circuit breaker.

Redis makes Skygate shared (cache, limits, fan-out) but never makes it fail.
Every call goes through `ResilientRedis.run`, which:

- returns the caller's fallback at once while the circuit is open (no socket
  touched), so a dead or frozen Redis costs a bounded delay on the few calls
  that were in flight when it died, not on every request;
- bounds each call by `REDIS_SOCKET_TIMEOUT` (socket timeouts plus an asyncio
  deadline, because a frozen server accepts connections and never answers);
- opens after `REDIS_FAILURE_THRESHOLD` consecutive failures, lets one probe
  through after `REDIS_RETRY_SECONDS` (half-open), and closes on its success;
- logs each state change once.

States reported: `absent` (no REDIS_URL), `ok`, `degraded` (circuit open or
half-open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from core import metrics
from core.breaker import CircuitBreaker

log = structlog.get_logger("skygate.redis")

T = TypeVar("T")
POOL_EXHAUSTED = "No connection available"  # redis-py's BlockingConnectionPool timeout
RedisState = Literal["absent", "ok", "degraded"]


class ResilientRedis:
    """The process's Redis client, or none; every use goes through `run`."""

    def __init__(
        self,
        url: str | None,
        *,
        max_connections: int,
        socket_timeout: float,
        failure_threshold: int,
        retry_seconds: float,
    ) -> None:
        self.url = url
        self.timeout = socket_timeout
        self.breaker = CircuitBreaker(
            threshold=failure_threshold, retry_after=retry_seconds, on_change=self._changed
        )
        self.pool: BlockingConnectionPool | None = None
        self.client: Redis | None = None
        if url:
            self.pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=socket_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                health_check_interval=30,
                retry_on_timeout=False,
            )
            self.client = Redis(connection_pool=self.pool)
            metrics.REDIS_STATE.set(1)

    @staticmethod
    def _changed(ok: bool, error: BaseException | None) -> None:
        if ok:
            log.warning("redis_recovered")
        else:
            log.warning("redis_unavailable", error=type(error).__name__, detail=str(error)[:200])
        metrics.REDIS_STATE.set(1 if ok else 0)
        metrics.REDIS_STATE_CHANGES.labels("ok" if ok else "degraded").inc()

    @property
    def configured(self) -> bool:
        return self.client is not None

    @property
    def state(self) -> RedisState:
        if self.client is None:
            return "absent"
        return "ok" if self.breaker.is_closed else "degraded"

    @property
    def usable(self) -> bool:
        """Would a call be attempted now (configured, circuit not refusing)?"""
        return self.client is not None and (
            self.breaker.is_closed
            or (
                not self.breaker.probing
                and time.monotonic() - (self.breaker.opened_at or 0) >= self.breaker.retry_after
            )
        )

    @property
    def pool_size(self) -> int:
        """Connections this process holds open to Redis now."""
        if self.pool is None:
            return 0
        return len(getattr(self.pool, "_connections", ()))

    async def run(self, operation: Callable[[Redis], Awaitable[T]], fallback: T) -> T:
        """Run `operation(client)` within the deadline, or return `fallback`."""
        client = self.client
        if client is None or not self.breaker.allow():
            return fallback
        try:
            async with asyncio.timeout(self.timeout * 2):
                result = await operation(client)
        except RedisConnectionError as exc:
            self.breaker.release()
            if str(exc).startswith(POOL_EXHAUSTED):
                # Every pooled connection is busy (this worker is loaded), Redis is not
                # at fault: skip Redis for this call without opening the circuit.
                return fallback
            self.breaker.record_failure(exc)
            return fallback
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.record_failure(exc)
            return fallback
        except asyncio.CancelledError:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return result

    async def ping(self) -> tuple[RedisState, float | None]:
        """Probe Redis through the breaker; (state, latency in ms or None)."""
        if self.client is None:
            return "absent", None
        started = time.perf_counter()
        ok = await self.run(lambda r: r.ping(), False)
        latency = round((time.perf_counter() - started) * 1000, 2)
        return (("ok" if ok else "degraded"), latency if ok else None)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self.pool is not None:
            await self.pool.disconnect()
