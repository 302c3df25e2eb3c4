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

Commands on the request path go through `command` (and `script`), which
gathers every command this worker issues in the same event-loop turn into one
write on one pipelined connection (`core.infra.resp`): redis-py spends 55-90 us of
CPU per round trip, and concurrent requests share one connection instead of
one each (docs/PERFORMANCE.md).

States reported: `absent` (no REDIS_URL), `ok`, `degraded` (circuit open or
half-open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from core.infra.breaker import CircuitBreaker
from core.infra.resp import PipelinedConnection
from core.observability import metrics

log = structlog.get_logger("skygate.redis")

T = TypeVar("T")
POOL_EXHAUSTED = "No connection available"  # redis-py's BlockingConnectionPool timeout
RedisState = Literal["absent", "ok", "degraded"]
_FAILED: Any = object()
Command = tuple[Any, ...]


def _or_fallback(result: Any, fallback: T) -> Any | T:
    """A command's reply, or `fallback` when Redis was unusable or refused it."""
    return fallback if result is _FAILED or isinstance(result, Exception) else result


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
        self.pipe: PipelinedConnection | None = None
        if url:
            self.pipe = PipelinedConnection(url, timeout=socket_timeout)
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
            metrics.REDIS_CONFIGURED.set(1)
        # The commands waiting for this turn's pipeline (the first one's caller sends it).
        self._batch: list[tuple[Command, asyncio.Future[Any] | None]] | None = None
        self._sending: set[asyncio.Future[Any]] = set()  # batches in flight (kept referenced)

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
        """Connections this process holds open to Redis now (idle and in use)."""
        if self.pool is None:
            return 0
        idle = getattr(self.pool, "_available_connections", ())
        busy = getattr(self.pool, "_in_use_connections", ())
        pipelined = 1 if self.pipe is not None and self.pipe.connected else 0
        return sum(1 for c in idle if c.is_connected) + len(busy) + pipelined

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

    async def command(self, *args: Any, fallback: T) -> Any | T:
        """One Redis command (`"GET", key`), pipelined with the others issued in
        this event-loop turn; `fallback` when Redis is unusable or the command
        failed."""
        return _or_fallback(await self._queue(args), fallback)

    async def script(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], fallback: T
    ) -> Any | T:
        """EVALSHA through the pipeline; loads the script again when Redis lost
        it (a restart, SCRIPT FLUSH) and retries once."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        result = await self._queue(command)
        if isinstance(result, ResponseError) and str(result).startswith("NOSCRIPT"):
            loaded = await self.run(lambda client: client.script_load(script.script), _FAILED)
            result = _FAILED if loaded is _FAILED else await self._queue(command)
        return _or_fallback(result, fallback)

    async def _queue(self, command: Command) -> Any:
        """Join this turn's batch, or start one: yield once so that the commands
        of the other requests woken in this turn can join, then send them all.

        The batch is sent by a task of its own, which the first caller awaits
        shielded: that caller going away (a rate-limited request's cache lookup
        is cancelled) must not cost the others their replies. Failing them
        instead sent their limit checks to the local fallback, and a pipeline
        cancelled after it was written counted its commands twice (in Redis,
        then locally): the job bench saw 981 and 1,022 of 1,000 requests."""
        if self.client is None or not self.breaker.available():
            return _FAILED
        batch = self._batch
        if batch is not None:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            batch.append((command, future))
            return await future
        batch = self._batch = [(command, None)]
        try:
            await asyncio.sleep(0)
        finally:
            self._batch = None
            sending = asyncio.ensure_future(self._send(batch))  # sent even if we are cancelled
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
        results = await asyncio.shield(sending)
        return _FAILED if results is _FAILED else results[0]

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any] | None]]) -> Any:
        results: Any = _FAILED
        try:
            pipe = self.pipe
            assert pipe is not None
            results = await self.run(lambda _: pipe.execute([c for c, _ in batch]), _FAILED)
        finally:  # the waiters get their replies, or their fallback
            for index, (_, waiter) in enumerate(batch):
                if waiter is not None and not waiter.done():
                    waiter.set_result(_FAILED if results is _FAILED else results[index])
        return results

    async def ping(self) -> tuple[RedisState, float | None]:
        """Probe Redis through the breaker; (state, latency in ms or None)."""
        if self.client is None:
            return "absent", None
        started = time.perf_counter()
        ok = await self.run(lambda r: r.ping(), False)
        latency = round((time.perf_counter() - started) * 1000, 2)
        return (("ok" if ok else "degraded"), latency if ok else None)

    async def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
        if self.client is not None:
            await self.client.aclose()
        if self.pool is not None:
            await self.pool.disconnect()
