"""Skygate's HTTP/1.1 protocol: uvicorn's httptools protocol with parser limits,
and each response head written with its body. Used by the gunicorn worker
(`core.serving.worker`) and the embedded server (`main_enterprise`).

It limits what a client can make the parser hold, which uvicorn's httptools
protocol does not (and gunicorn's `limit_request_*` do not reach uvicorn
workers): a request line plus headers of at most HTTP_MAX_HEADER_BYTES and
HTTP_MAX_HEADERS fields (else 431), a head complete within
HTTP_HEADER_TIMEOUT_SECONDS of its first byte (else 408), a body that never
stalls for HTTP_BODY_TIMEOUT_SECONDS (else 408); each answer closes the
connection. Before a request's first byte, idle time is bounded by uvicorn's
keep-alive timeout (gunicorn's `keepalive`, 75 s), now also on a fresh
connection, which uvicorn would otherwise hold open for ever: the header timer
starts at the first byte, so an idle keep-alive connection is not "trickling".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
import structlog
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from core.config import Settings
from core.errors import BadRequestError, GatewayError, RequestTimeoutError, error_body
from core.serving.balance import LostCallbacks

log = structlog.get_logger("skygate.serving")


class _HeadWithBody:
    """The connection's transport, except that a response head is held until the
    body's first write and both leave in one `send()`.

    uvicorn writes the head when the app sends `http.response.start` and the body
    on `http.response.body`; uvloop sends each write at once, so every response
    cost two system calls (on loopback each also runs the peer's TCP receive:
    ~12 us of a ~300 us cache hit, docs/PERFORMANCE.md). A head whose body does
    not follow in the same step (a stream waiting for its first event) leaves on
    the next loop iteration.
    """

    __slots__ = ("_transport", "_head", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data[:5] == b"HTTP/":
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one request may make the HTTP parser hold, and for how long."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
        )


class _Refusal(Exception):
    """A request the protocol answers itself (431, 408) and then closes."""

    def __init__(self, error: GatewayError, status: int, reason: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = status
        self.reason = reason  # the `security_events_total` type


def _head_too_large(message: str) -> _Refusal:
    error = BadRequestError(message, code="request_header_fields_too_large")
    return _Refusal(error, 431, "header_too_large")


class _ReadClock(FlowControl):
    """uvicorn's flow control, noting when the app last asked for more body (its
    `receive()` resumes reading each time): a body's silence counts from there,
    not from before a pause the gateway itself made."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport)
        self._loop = loop
        self.asked_at = 0.0

    def resume_reading(self) -> None:
        self.asked_at = self._loop.time()
        super().resume_reading()


# Where the parser is in the current request: waiting for its first byte, inside
# the head (request line and headers), or inside the body.
_IDLE, _HEAD, _BODY = 0, 1, 2
# Bytes of the request line besides its URL (longest method), and the blank line.
_REQUEST_LINE_EXTRA = len(b"OPTIONS  HTTP/1.1\r\n\r\n")


class SkygateHttpProtocol(LostCallbacks, HttpToolsProtocol):
    """uvicorn's httptools protocol with parser limits (`HttpLimits`), writing each
    response head with its body. On a WebSocket upgrade it hands what waits for the
    connection's end (`LostCallbacks`: the balancer's count) to the WebSocket protocol.

    Head size. httptools buffers a header line until it ends, so bytes are counted
    as they are fed: a head still incomplete after more than `max_header_bytes` is
    refused at once (the parser holds at most that plus one read). A head that
    completes within one read is measured exactly when it could be over the
    limit; a read under the limit cannot be, so normal requests cost no walk.
    Timers are armed only when a request spans reads, so a request that arrives
    in one read (nearly all) costs no timer.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _IDLE
        self._heads = 0  # heads completed on this connection
        self._head_fed = 0  # bytes of the current head in earlier reads
        self._head_unmeasured = False  # part of the head shared a read with a pipelined request
        self._read = 0  # size of the read being parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[SkygateHttpProtocol]:
        """This protocol class with `limits` (uvicorn is given a class and builds one
        protocol per connection from it)."""
        return cast(type[SkygateHttpProtocol], type(cls.__name__, (cls,), {"limits": limits}))

    # -- connection ------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]
        self.flow = _ReadClock(self.transport, self.loop)
        # uvicorn arms its keep-alive timer only after a response, so a connection
        # that never sends a byte would be held open for ever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._stop_timers()
            super().connection_lost(exc)
        finally:
            self.run_lost_callbacks()

    def handle_websocket_upgrade(self) -> None:
        """uvicorn's upgrade, which ends with the WebSocket protocol holding the
        transport: asyncio tells that one, not this one, when the connection ends."""
        super().handle_websocket_upgrade()
        self.hand_over(self.transport.get_protocol())

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        phase, heads = self._phase, self._heads
        self._read = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_timers()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refusal):  # raised by a callback below
                self._refuse(exc.__context__)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._phase == _HEAD:
            self._head_arrived(data, started_here=phase != _BODY and heads == self._heads)
        elif self._phase == _BODY:
            self._body_arrived()

    def _head_arrived(self, data: bytes, *, started_here: bool) -> None:
        """After a read that left a head incomplete: count it, arm the head timer."""
        if started_here:  # the whole read is head (the request began with it or before)
            self._head_fed += len(data)
            if self._head_fed > self.limits.max_header_bytes:
                self._refuse(_head_too_large(self._too_large_message()))
                return
        else:  # a pipelined request began inside this read: measure its head at the end
            self._head_unmeasured = True
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )

    def _body_arrived(self) -> None:
        self._body_seen = self.loop.time()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    # -- parser callbacks ------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        self._head_fed = 0
        self._head_unmeasured = False

    def on_headers_complete(self) -> None:
        self._check_head()
        self._phase = _BODY
        self._heads += 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _check_head(self) -> None:
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            raise _head_too_large(f"The request has more than {limits.max_headers} header fields.")
        # What was fed bounds the head from above; measure only when that bound is over.
        if self._head_unmeasured or self._head_fed + self._read > limits.max_header_bytes:
            size = _REQUEST_LINE_EXTRA + len(self.url)
            size += sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limits.max_header_bytes:
                raise _head_too_large(self._too_large_message())

    def _too_large_message(self) -> str:
        return f"The request line and headers exceed {self.limits.max_header_bytes} bytes."

    # -- timers ----------------------------------------------------------------
    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._phase == _HEAD:
            seconds = f"{self.limits.header_timeout:g}"
            error = RequestTimeoutError(f"The request headers did not arrive within {seconds} s.")
            self._refuse(_Refusal(error, 408, "header_timeout"))

    def _body_check(self) -> None:
        """The body timer: close a connection whose body stopped arriving. Silence is
        counted from the later of the last bytes and the app's last ask for more,
        and not at all while the gateway is not reading (flow control) or the
        client waits for its `100 Continue`."""
        self._body_timer = None
        if self._phase != _BODY or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        flow = self.flow
        if flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_seen = now
        asked = flow.asked_at if isinstance(flow, _ReadClock) else 0.0
        idle = now - max(self._body_seen, asked)
        if idle < self.limits.body_timeout:
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout - idle, self._body_check
            )
            return
        seconds = f"{self.limits.body_timeout:g}"
        error = RequestTimeoutError(f"The request body stalled for {seconds} s.")
        self._refuse(_Refusal(error, 408, "body_timeout"))

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # -- refusing --------------------------------------------------------------
    def _refuse(self, refusal: _Refusal) -> None:
        """Answer `refusal` in OpenAI's error shape and close; only close when the
        answer would not be the next response on the wire (an earlier pipelined
        request is still owed one, or this request's own response has begun)."""
        self._stop_timers()
        cycle = self.cycle
        if self._phase == _BODY:  # the refused request is `cycle` itself
            answer = cycle is not None and not cycle.response_started
        else:  # the refused request has no cycle yet; `cycle` is the one before it
            answer = cycle is None or cycle.response_complete
        if not self.transport.is_closing():
            if answer and not self.pipeline:
                self.transport.write(self._error_response(refusal))
            self.transport.close()
        from core.observability import metrics  # in the worker: metric values are per process

        metrics.SECURITY_EVENTS.labels(refusal.reason).inc()
        log.info("http_request_refused", status=refusal.status, reason=refusal.reason)

    def _error_response(self, refusal: _Refusal) -> bytes:
        body = error_body(refusal.error, None)
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        return b"".join(head) + body
