"""Run events across processes and instances: each run's events are appended to a
per-run Redis Stream, and one reader per process follows the streams its followers want.

A stream rather than pub/sub, because it keeps its entries: a follower that subscribes
late, or whose reader lost Redis for a moment, reads on from its cursor (the seq it
last delivered) instead of losing what was published in between. The entry ids are
the run's seqs (`{seq}-0`), so the stream's order is the run's and an append is
idempotent (Redis refuses an id at or below the stream's top): a batch sent again
after an ambiguous failure (a frozen Redis runs the commands it buffered when it
thaws) adds only what is missing. Streams are trimmed to about `STREAM_MAXLEN`
entries and expire `ENDED_TTL` after their run ends (`RUNNING_TTL` while it runs, in
case its process dies); the database stays the record (`agents.events`), so a
trimmed or expired stream costs a read of the store, never an event.

Writing: `StreamWriter`, one per `EventLog`, is a task that appends what the run
emitted since its last append, in order, in one `EVALSHA` that goes through the
process's pipelined Redis connection (`ResilientRedis.script`). When Redis is away it
keeps the events and tries again every `RETRY_SECONDS`, so the stream has no hole
once Redis is back (a Redis that restarted empty has lost the older entries; readers
fill that hole from the store).

Reading: `EventBus` holds one dedicated connection per process and one task on it,
which issues `XREAD BLOCK` over every stream that has a local `Subscription` and
hands each entry to them. Not through `ResilientRedis`: a BLOCK outlives its socket
timeout (each quiet BLOCK would count as a failure and open the breaker) and would
hold the pipelined connection's replies behind it. The BLOCK is short (`BLOCK_MS`)
and bounded by an asyncio deadline, so a frozen Redis is noticed within seconds; a new
stream interrupts it through this process's wake stream (an `XADD` the reader also
reads). While the reader fails, `live_available` is False and followers read the
store instead; it retries every `RETRY_SECONDS` and, back, reads on from each
stream's cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from agents.events import RunEvent
from core.infra.redis import ResilientRedis

log = structlog.get_logger("skygate.agents.events")

STREAM_MAXLEN = 10_000  # entries per run stream, approximately (MAXLEN ~)
RUNNING_TTL = 24 * 3600  # seconds: a safety net while the run runs
ENDED_TTL = 3600  # seconds a stream outlives its run
BLOCK_MS = 1000  # one XREAD's wait: with the margin, how long a frozen Redis goes unnoticed
READ_MARGIN = 0.5  # seconds over the BLOCK before a read counts as frozen
READ_COUNT = 500  # entries per stream per read
RETRY_SECONDS = 1.0  # after a failed append or read
MAX_BATCH = 500  # events per append
QUEUE_LIMIT = 4096  # a subscription's undelivered events (beyond: dropped, read from the store)
WAKE_TTL = 600

# Appends (seq-0 id, type, data) triples after the stream's top, skipping ids it has
# (a batch sent again), and sets the stream's expiry. Returns how many were added.
APPEND_LUA = """
local added = 0
for i = 3, #ARGV, 3 do
  local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i],
                         'type', ARGV[i + 1], 'data', ARGV[i + 2])
  if type(id) ~= 'table' then added = added + 1 end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return added
"""

_PREFIX, _SUFFIX = "skygate:run:", ":events"
_FAILED: Any = object()


def stream_key(run_id: str) -> str:
    return f"{_PREFIX}{run_id}{_SUFFIX}"


class Subscription:
    """One follower's view of a run's stream: the reader puts events on `queue`
    (and `None` when it lost Redis); the follower keeps `last`, the seq it delivered."""

    __slots__ = ("run_id", "last", "queue", "dropped")

    def __init__(self, run_id: str, after: int) -> None:
        self.run_id = run_id
        self.last = after
        self.queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        self.dropped = 0

    def offer(self, item: RunEvent | None) -> None:
        # Never blocks the reader: a follower that lags this far finds the gap and
        # reads it from the store.
        if self.queue.qsize() < QUEUE_LIMIT:
            self.queue.put_nowait(item)
        else:
            self.dropped += 1


class StreamWriter:
    """Appends one run's events to its stream, in order, from one task; `add` is
    what `EventLog.emit` calls (no await, no I/O)."""

    def __init__(self, bus: EventBus, run_id: str) -> None:
        self.bus = bus
        self.run_id = run_id
        self.pending: list[RunEvent] = []
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"run-stream-{self.run_id}")

    def add(self, event: RunEvent) -> None:
        self.pending.append(event)
        if len(self.pending) > STREAM_MAXLEN:  # Redis away this long: the oldest are trimmed anyway
            del self.pending[: len(self.pending) - STREAM_MAXLEN]
        self._wakeup.set()

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            ending = self._closing.is_set()
            while self.pending or ending:
                batch = self.pending[:MAX_BATCH]
                last = len(batch) == len(self.pending)
                ttl = ENDED_TTL if ending and last else RUNNING_TTL
                if await self.bus.append(self.run_id, batch, ttl=ttl):
                    del self.pending[: len(batch)]
                    if self._failing:
                        log.info("run_stream_recovered", run_id=self.run_id)
                        self._failing = False
                    if last and ending:
                        return
                    continue
                if not self._failing:
                    log.warning("run_stream_append_failed", run_id=self.run_id)
                    self._failing = True
                if ending:  # one try at the end: the store has them all
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), RETRY_SECONDS)
                ending = self._closing.is_set()

    async def close(self) -> None:
        """Append what is left and set the stream's expiry to `ENDED_TTL` (one try,
        bounded by Redis's deadline: a Redis away leaves the 24 h one)."""
        self._closing.set()
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


class EventBus:
    """This process's side of the run streams: writers for the runs it runs, and the
    reader for the runs its followers follow that run elsewhere."""

    def __init__(self, redis: ResilientRedis | None) -> None:
        self.redis = redis
        self._script = redis.client.register_script(APPEND_LUA) if redis and redis.client else None
        self._subs: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, int] = {}  # run id -> the last seq read from its stream
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reading = False  # an XREAD is in flight (a new stream must interrupt it)
        self._wake_sent = False
        self._wake_key = f"skygate:bus:{uuid.uuid4().hex}:wake"
        self._wake_id = "0-0"
        self._read_failing = False
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    @property
    def configured(self) -> bool:
        return self.redis is not None and self.redis.configured

    @property
    def live_available(self) -> bool:
        """Whether events of runs executing elsewhere reach this process's followers
        live; otherwise they poll the store. While the reader reads, its last read
        says; idle, the process's Redis client (its breaker) does."""
        if self.redis is None or not self.redis.configured:
            return False
        if self._subs and self._task is not None and not self._task.done():
            return not self._read_failing
        return self.redis.state == "ok"

    @property
    def reading(self) -> bool:
        """Whether the reader is waiting in an XREAD now."""
        return self._reading

    @property
    def followed(self) -> frozenset[str]:
        """The runs whose streams the reader follows now."""
        return frozenset(self._subs)

    # -- writing -------------------------------------------------------------------------
    def writer(self, run_id: str) -> StreamWriter | None:
        return StreamWriter(self, run_id) if self.configured else None

    async def publish_final(self, event: RunEvent) -> bool:
        """Append a run's last event written outside any log (a queued run's cancel),
        so that its followers elsewhere see it now rather than at their next look."""
        return await self.append(event.run_id, [event], ttl=ENDED_TTL)

    async def append(self, run_id: str, events: Sequence[RunEvent], *, ttl: int) -> bool:
        """Append `events` (ascending seqs) to the run's stream; False when Redis was
        unusable or failed (some of them may have been added: sending them again is safe)."""
        if self.redis is None or self._script is None:
            return False
        args: list[Any] = [STREAM_MAXLEN, ttl]
        for event in events:
            args += (f"{event.seq}-0", event.type, orjson.dumps(event.data))
        result = await self.redis.script(self._script, [stream_key(run_id)], args, _FAILED)
        return result is not _FAILED

    # -- reading -------------------------------------------------------------------------
    def subscribe(self, run_id: str, after: int) -> Subscription:
        """Follow the run's stream from after `after` (what the caller has delivered)."""
        sub = Subscription(run_id, after)
        subs = self._subs.setdefault(run_id, set())
        subs.add(sub)
        cursor = self._cursors.get(run_id)
        if cursor is None or after < cursor:
            self._cursors[run_id] = after
            self._wake()
        if (self._task is None or self._task.done()) and self.configured and not self._closed:
            self._task = asyncio.create_task(self._read_loop(), name="run-stream-reader")
        self._changed.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:  # its stream leaves the next read (no need to interrupt this one)
            del self._subs[sub.run_id]
            self._cursors.pop(sub.run_id, None)

    def _wake(self) -> None:
        """Interrupt the XREAD in flight, so the next one reads the new set of streams."""
        if not self._reading or self._wake_sent or self.redis is None:
            return
        self._wake_sent = True
        task = asyncio.ensure_future(self._send_wake(self.redis))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_wake(self, redis: ResilientRedis) -> None:
        # Both in this turn: one pipelined write. Lost (Redis away), the BLOCK ends anyway.
        await asyncio.gather(
            redis.command("XADD", self._wake_key, "MAXLEN", 1, "*", "w", 1, fallback=None),
            redis.command("EXPIRE", self._wake_key, WAKE_TTL, fallback=None),
        )

    def _streams(self) -> dict[str, str]:
        streams = {self._wake_key: self._wake_id}
        for run_id, subs in self._subs.items():
            # Every follower has what it delivered: no need to read that again.
            cursor = max(self._cursors.get(run_id, 0), min(s.last for s in subs))
            self._cursors[run_id] = cursor
            streams[stream_key(run_id)] = f"{cursor}-0"
        return streams

    async def _read_loop(self) -> None:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert self.redis is not None and self.redis.url
        # Its own connection with no socket timeout (the asyncio deadline bounds each
        # read) and no retries (a failure is handled here, promptly).
        client: Any = Redis.from_url(
            self.redis.url,
            socket_connect_timeout=self.redis.timeout,
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                if not self._subs:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                streams = self._streams()
                self._reading = True
                try:
                    async with asyncio.timeout(BLOCK_MS / 1000 + READ_MARGIN):
                        reply = await client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                except Exception as exc:  # Redis away or frozen: followers read the store
                    self._reading = self._wake_sent = False
                    self._failed(exc)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                self._reading = self._wake_sent = False
                if self._read_failing:
                    log.info("run_stream_reader_recovered")
                    self._read_failing = False
                self._dispatch(reply)
        finally:
            self._reading = False
            with contextlib.suppress(Exception):
                await client.aclose()

    def _failed(self, exc: BaseException) -> None:
        if not self._read_failing:
            log.warning("run_stream_reader_unavailable", error=type(exc).__name__)
            self._read_failing = True
        for subs in self._subs.values():
            for sub in subs:
                sub.offer(None)  # wakes the follower: read the store now

    def _dispatch(self, reply: Any) -> None:
        items = reply.items() if isinstance(reply, dict) else reply or ()
        for raw_key, entries in items:
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            if key == self._wake_key:
                if entries:
                    last_id = entries[-1][0]
                    self._wake_id = last_id.decode() if isinstance(last_id, bytes) else last_id
                continue
            run_id = key[len(_PREFIX) : -len(_SUFFIX)]
            subs = self._subs.get(run_id)
            if not subs:
                continue  # unsubscribed while the read was in flight
            cursor = self._cursors.get(run_id, 0)
            for entry_id, fields in entries:
                try:
                    seq = int(bytes(entry_id).split(b"-", 1)[0])
                    if seq <= cursor:
                        continue
                    kind, data = fields[b"type"].decode(), orjson.loads(fields[b"data"])
                except (KeyError, ValueError, TypeError, AttributeError):
                    # Not one of ours: skipped (its follower fills the hole from the store).
                    log.warning("run_stream_entry_unreadable", run_id=run_id, id=str(entry_id))
                    continue
                cursor = seq
                event = RunEvent(run_id, seq, kind, data)
                for sub in subs:
                    sub.offer(event)
            self._cursors[run_id] = cursor

    async def close(self) -> None:
        self._closed = True
        for task in [self._task, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None
