"""Spread connections evenly over gunicorn's workers.

Every worker accepts from the one listening socket the master opened. uvloop
accepts every pending connection each time a worker wakes, so when clients open
their connections in a burst — a load balancer's upstream pool, an SDK's
connection pool, a benchmark — the worker that wakes first takes nearly all of
them and keeps them for their whole keep-alive life: it saturates while the
other idles (measured: 1.0 core used of 2 with 16 connections,
docs/PERFORMANCE.md).

So each worker accepts by itself, one connection per wake-up, and publishes how
many connections it holds on a `ConnectionBoard`, a few bytes of shared memory
the master maps before it forks. A worker holding more than the least loaded
other worker steps back for `DEFER_SECONDS` so that one can accept; if the
connection is still waiting after that (the others are busy or stuck), it takes
it anyway, so no connection waits longer. This is nginx's `accept_mutex` idea
without the lock. Unlike per-worker `SO_REUSEPORT` sockets it keeps the single
kernel backlog: a worker that is recycled drops no queued connection, and the
spread is exact rather than a hash.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import socket
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("skygate.balance")

DEFER_SECONDS = 0.005
ACCEPT_RETRY_SECONDS = 1.0  # after EMFILE and friends, like asyncio's own server
SLOTS = 64  # room for every worker during a reload (old and new generations)
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ConnectionBoard:
    """Per-worker open-connection counts in shared memory: slot i holds
    (pid, connections). Each worker writes only its own slot; the master assigns
    and frees slots. Reads are unlocked: a stale count only delays a balance."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, slots * 16)  # anonymous and MAP_SHARED: survives fork
        self._cells = memoryview(self._map).cast("q")

    # -- master ----------------------------------------------------------------
    def claim(self, taken: set[int]) -> int:
        """A free slot for a worker about to be forked; `taken` are the slots of
        the live workers (the master's bookkeeping, so a worker that has not yet
        written its pid still holds its slot)."""
        for slot in range(self.slots):
            if slot not in taken:
                self.release(slot)
                return slot
        raise RuntimeError("no free connection-board slot")

    def release(self, slot: int) -> None:
        self._cells[2 * slot] = 0
        self._cells[2 * slot + 1] = 0

    # -- workers ---------------------------------------------------------------
    def join(self, slot: int, pid: int) -> None:
        self._cells[2 * slot + 1] = 0
        self._cells[2 * slot] = pid

    def leave(self, slot: int) -> None:
        """This worker stops accepting: nobody should defer to it any more."""
        self._cells[2 * slot] = 0

    def publish(self, slot: int, connections: int) -> None:
        self._cells[2 * slot + 1] = connections

    def connections(self, slot: int) -> int:
        return int(self._cells[2 * slot + 1])

    def over_share(self, slot: int) -> bool:
        """True when this worker holds more connections than some other live worker."""
        cells = self._cells
        mine = cells[2 * slot + 1]
        for other in range(self.slots):
            if other != slot and cells[2 * other] > 0 and cells[2 * other + 1] < mine:
                return True
        return False


def board_for(workers: int) -> ConnectionBoard | None:
    """The board a gunicorn master (gunicorn.conf.py) maps before it forks; none
    for a single worker, which has nobody to balance with."""
    return ConnectionBoard() if workers > 1 else None


class LostCallbacks:
    """For a protocol whose connection may pass to another protocol (an HTTP/1.1
    upgrade to WebSocket): callbacks run once when the connection is lost, handed
    over with it, since asyncio then tells only the protocol that holds the
    transport at the end. The protocol calls `run_lost_callbacks` from its
    `connection_lost` and `hand_over` once the successor holds the transport."""

    _lost_callbacks: list[Callable[[], None]] | None = None  # made on first use

    def add_lost_callback(self, callback: Callable[[], None]) -> None:
        if self._lost_callbacks is None:
            self._lost_callbacks = []
        self._lost_callbacks.append(callback)

    def hand_over(self, successor: asyncio.BaseProtocol) -> None:
        callbacks, self._lost_callbacks = self._lost_callbacks, None
        for callback in callbacks or ():
            call_when_lost(successor, callback)

    def run_lost_callbacks(self) -> None:
        callbacks, self._lost_callbacks = self._lost_callbacks, None
        for callback in callbacks or ():
            callback()


def call_when_lost(protocol: asyncio.BaseProtocol, callback: Callable[[], None]) -> None:
    """Run `callback` once `protocol`'s connection is lost — or, for a `LostCallbacks`
    protocol that hands its connection over, when the successor's is. Any other
    protocol has its `connection_lost` wrapped."""
    if isinstance(protocol, LostCallbacks):
        protocol.add_lost_callback(callback)
        return
    lost = protocol.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        try:
            lost(exc)
        finally:
            callback()

    protocol.connection_lost = connection_lost  # type: ignore[method-assign]


class BalancedListener:
    """Accepts connections on a shared listening socket for one worker, deferring
    to less loaded workers. Stands in for the asyncio `Server` uvicorn keeps."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.Protocol],
        *,
        board: ConnectionBoard,
        slot: int,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._factory = protocol_factory
        self._board = board
        self._slot = slot
        self._on_change = on_change
        self._open = 0
        self._closed = False
        self._deferred: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        sock.setblocking(False)
        board.join(slot, os.getpid())  # from now on other workers defer to this one
        if on_change is not None:
            on_change(0)
        self._loop.add_reader(self._fd, self._readable)

    @property
    def connections(self) -> int:
        return self._open

    # -- accepting ------------------------------------------------------------------
    def _readable(self) -> None:
        if self._board.over_share(self._slot):
            self._loop.remove_reader(self._fd)
            self._deferred = self._loop.call_later(DEFER_SECONDS, self._resume)
            return
        self._accept()

    def _resume(self) -> None:
        self._deferred = None
        if self._closed:
            return
        self._accept()  # still waiting after the deferral: nobody else took it
        if not self._closed and self._deferred is None:
            self._loop.add_reader(self._fd, self._readable)

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as error:
            if error.errno not in _RESOURCE_ERRNOS:
                raise
            log.error("accept_failed", error=os.strerror(error.errno or 0))
            self._loop.remove_reader(self._fd)
            self._deferred = self._loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)
            return
        self._changed(+1)  # counted from accept, so the next wake-up already sees it
        task = self._loop.create_task(self._connect(conn))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._counted, sock=conn)
        except Exception:  # the peer vanished between accept and setup
            conn.close()
        finally:
            self._changed(-1)  # the protocol counts it from here, if it was made

    def _counted(self) -> asyncio.Protocol:
        """The uvicorn protocol, counted from connection_made until the connection is
        lost (asyncio calls connection_lost only after connection_made) — also when it
        was upgraded to a WebSocket, whose protocol then holds the count."""
        protocol = self._factory()
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            self._changed(+1)
            call_when_lost(protocol, self._released)
            made(transport)

        protocol.connection_made = connection_made  # type: ignore[method-assign]
        return protocol

    def _released(self) -> None:
        self._changed(-1)

    def _changed(self, delta: int) -> None:
        self._open += delta
        self._board.publish(self._slot, self._open)
        if self._on_change is not None:
            self._on_change(self._open)

    # -- the asyncio Server surface uvicorn uses ------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._board.leave(self._slot)  # a stopping worker must not hold the others back
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        self._loop.remove_reader(self._fd)

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
