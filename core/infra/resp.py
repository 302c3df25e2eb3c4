"""One pipelined Redis connection per worker for the commands on the request path.

Every request does at least one Redis command (its rate limit), a cache miss
three. Through redis-py each round trip costs 55-90 us of CPU in this process
(a pool checkout under an asyncio lock, retry and observability wrappers, a
reply parser in Python), a cache hit's whole budget is ~250 us
(docs/PERFORMANCE.md). Here the batch `core.infra.redis` gathers each event-loop
turn is packed into one write on one long-lived connection, and the replies
are parsed by hiredis (redis-py's own optional C parser) as they arrive and
handed back in order: RESP answers in the order it was asked, so no reply
needs an id.

Only that narrow job lives here: connecting (AUTH, SELECT, TLS from the same
URL redis-py reads), framing, ordering. Timeouts, the circuit breaker and the
fallbacks stay in `core.infra.redis.ResilientRedis`, and everything else (health
checks, script loading, admin commands) still goes through redis-py.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Command = tuple[Any, ...]


def pack(commands: list[Command]) -> bytes:
    """RESP arrays of bulk strings, as redis-py encodes arguments (str as UTF-8,
    numbers by their decimal text)."""
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            cls = arg.__class__
            if cls is str:
                data = arg.encode()
            elif cls is bytes:
                data = arg
            elif cls is int:
                data = b"%d" % arg
            elif cls is float:
                data = repr(arg).encode()
            else:
                raise TypeError(f"cannot send {cls.__name__} to Redis")
            append(b"$%d\r\n" % len(data))
            append(data)
            append(b"\r\n")
    return b"".join(out)


class _Batch:
    __slots__ = ("size", "replies", "future", "sent_at")

    def __init__(self, size: int, future: asyncio.Future[list[Any]]) -> None:
        self.size = size
        self.replies: list[Any] = []
        self.future = future
        self.sent_at = time.monotonic()


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[_Batch] = deque()
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            reply = self.reader.gets()
            if reply is False:
                return
            batch = waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.size:
                waiting.popleft()
                if not batch.future.done():  # a cancelled caller's replies are dropped
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or RedisConnectionError("Redis closed the connection")
        while self.waiting:
            future = self.waiting.popleft().future
            if not future.done():
                future.set_exception(RedisConnectionError(str(self.lost)))


class PipelinedConnection:
    """Sends batches of commands on one connection; opened on first use and
    again after it fails or stalls."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.options = parse_url(url)
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def connected(self) -> bool:
        protocol = self._protocol
        return protocol is not None and protocol.lost is None

    async def execute(self, commands: list[Command]) -> list[Any]:
        """The replies, in order; a command's error reply is its ResponseError
        instance. Raises ConnectionError/OSError/TimeoutError when Redis is not
        answering (the caller bounds the wait)."""
        protocol = await self._connected()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        protocol.waiting.append(_Batch(len(commands), future))
        assert protocol.transport is not None
        protocol.transport.write(pack(commands))
        return await future

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None and not self._stalled(protocol):
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            protocol = self._protocol
            if protocol is None or protocol.lost is not None or self._stalled(protocol):
                self.close()
                self._protocol = protocol = await self._connect()
        return protocol

    def _stalled(self, protocol: _Protocol) -> bool:
        """The oldest batch has waited past the timeout: the server is not
        answering (frozen, or the network dropped us), so start afresh."""
        waiting = protocol.waiting
        return bool(waiting) and time.monotonic() - waiting[0].sent_at > 2 * self.timeout

    async def _connect(self) -> _Protocol:
        options = self.options
        loop = asyncio.get_running_loop()
        context = None
        connection_class = options.get("connection_class")
        if connection_class is not None and issubclass(connection_class, SSLConnection):
            context = ssl.create_default_context()
            if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        async with asyncio.timeout(self.timeout):
            _, protocol = await loop.create_connection(
                _Protocol,
                host=options.get("host", "localhost"),
                port=int(options.get("port", 6379)),
                ssl=context,
            )
            handshake: list[Command] = []
            if options.get("password"):
                handshake.append(
                    ("AUTH", options["username"], options["password"])
                    if options.get("username")
                    else ("AUTH", options["password"])
                )
            if int(options.get("db", 0) or 0):
                handshake.append(("SELECT", int(options["db"])))
            if handshake:
                future: asyncio.Future[list[Any]] = loop.create_future()
                protocol.waiting.append(_Batch(len(handshake), future))
                assert protocol.transport is not None
                protocol.transport.write(pack(handshake))
                for reply in await future:
                    if isinstance(reply, ResponseError):
                        if protocol.transport is not None:
                            protocol.transport.close()
                        raise RedisConnectionError(f"Redis refused the connection: {reply}")
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
