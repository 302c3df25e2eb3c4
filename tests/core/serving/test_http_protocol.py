"""The worker's HTTP protocol: a response head leaves with its body in one
write, and a head whose body is not ready yet (a stream) still leaves at once;
and its parser limits where a real server cannot show them (heads split over
reads, pipelined requests, flow control, a fresh connection's idle timer).
Oversized and trickled heads over real sockets: tests/security/test_header_limits.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from core.serving.http_protocol import HttpLimits, SkygateHttpProtocol, _HeadWithBody
from tests.support.app import make_settings


class RecordingTransport(asyncio.Transport):
    """A transport that records what would be sent (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    @property
    def sent(self) -> bytes:
        return b"".join(self.writes)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_head_and_body_written_in_the_same_step_leave_together() -> None:
    transport = RecordingTransport()
    wrapped = _HeadWithBody(transport)
    wrapped.write(HEAD)
    wrapped.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert transport.writes == [HEAD + b"{}"], "nothing left over to flush"


async def test_a_head_without_its_body_leaves_on_the_next_iteration() -> None:
    transport = RecordingTransport()
    wrapped = _HeadWithBody(transport)
    wrapped.write(HEAD)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [HEAD], "a stream's headers do not wait for its first event"
    wrapped.write(b"data: 1\n\n")
    assert transport.writes == [HEAD, b"data: 1\n\n"], "body chunks are written at once"


async def test_close_sends_a_held_head_first_and_the_rest_is_delegated() -> None:
    transport = RecordingTransport()
    wrapped = _HeadWithBody(transport)
    wrapped.write(HEAD)
    wrapped.close()
    assert transport.writes == [HEAD] and transport.closed
    assert wrapped.is_closing() is True
    assert wrapped.get_extra_info("peername") == ("127.0.0.1", 1)


# --------------------------------------------------------------------------- parser limits

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def answer_ok(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Reads the whole body and answers with its length."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = str(len(body)).encode()
    headers = [(b"content-length", str(len(text)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def protocol(
    limits: HttpLimits, app: Any = answer_ok, keep_alive: float = 5
) -> tuple[SkygateHttpProtocol, RecordingTransport]:
    # uvicorn annotates `timeout_keep_alive` as int but only hands it to `call_later`;
    # the keep-alive test needs a 50 ms timeout, not a second.
    config = Config(
        app=app,
        lifespan="off",
        log_config=None,
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
    )
    config.load()
    proto = SkygateHttpProtocol.with_limits(limits)(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = RecordingTransport()
    proto.connection_made(transport)
    return proto, transport


def status_and_code(sent: bytes) -> tuple[int, str | None]:
    head, _, body = sent.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"] if status >= 400 else None


def test_limits_come_from_settings_and_leave_the_base_class_alone() -> None:
    settings = make_settings(http_max_headers=10, http_header_timeout_seconds=2.5)
    limited = SkygateHttpProtocol.with_limits(HttpLimits.from_settings(settings))
    assert issubclass(limited, SkygateHttpProtocol)
    assert (limited.limits.max_headers, limited.limits.header_timeout) == (10, 2.5)
    assert limited.limits.max_header_bytes == settings.http_max_header_bytes == 64 * 1024
    assert SkygateHttpProtocol.limits == HttpLimits()


async def test_a_head_is_refused_while_it_is_still_arriving() -> None:
    """No line end in sight: counted per read, refused once past the limit, so the
    parser never buffers much more than the limit."""
    proto, transport = protocol(HttpLimits(max_header_bytes=16 * 1024))
    proto.data_received(b"GET /live HTTP/1.1\r\nX-Endless: ")
    fed = 0
    while not transport.closed:
        proto.data_received(b"e" * 4096)
        fed += 4096
        assert fed < 64 * 1024
    assert fed <= 16 * 1024 + 4096
    assert status_and_code(transport.sent) == (431, "request_header_fields_too_large")


async def test_a_head_in_one_read_is_measured_exactly() -> None:
    limits = HttpLimits(max_header_bytes=4096)
    line = b"GET /live HTTP/1.1\r\nHost: x\r\n"
    under, over = (line + b"X-Pad: " + b"p" * n + b"\r\n\r\n" for n in (3900, 4100))
    proto, transport = protocol(limits)
    proto.data_received(under)
    await asyncio.sleep(0.01)
    assert status_and_code(transport.sent) == (200, None) and not transport.closed
    proto, transport = protocol(limits)
    proto.data_received(over)
    assert status_and_code(transport.sent) == (431, "request_header_fields_too_large")
    assert transport.closed


async def test_a_pipelined_head_is_measured_and_never_answered_out_of_turn() -> None:
    """A request whose head begins in the same read as the end of the one before is
    still measured; its refusal must not be sent as the earlier request's answer."""
    proto, transport = protocol(HttpLimits(max_header_bytes=8192))
    first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    proto.data_received(first + b"GET /b HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 6000)
    proto.data_received(b"b" * 6000 + b"\r\n\r\n")
    assert transport.closed
    assert b" 431 " not in transport.sent


async def test_a_body_held_back_by_flow_control_is_not_a_stall() -> None:
    """The gateway pausing its own reads (the app is not reading yet) does not
    count against the client; the client going silent does."""

    reading = asyncio.Event()

    async def slow_reader(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await asyncio.sleep(0.5)  # five body timeouts before the app reads at all

        async def first_receive() -> dict[str, Any]:
            message = await receive()
            reading.set()
            return message

        await answer_ok(scope, first_receive, send)

    proto, transport = protocol(HttpLimits(body_timeout=0.1), app=slow_reader)
    size = 200 * 1024
    proto.data_received(
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"z" * (100 * 1024)
    )
    assert not transport.reading  # paused: more than uvicorn's high-water mark is buffered
    await asyncio.wait_for(reading.wait(), 5)
    assert not transport.closed, "closed while the gateway itself was not reading"
    proto.data_received(b"z" * (size - 100 * 1024))  # the client sends the rest at once
    await asyncio.sleep(0.05)
    assert status_and_code(transport.sent) == (200, None)

    proto, transport = protocol(HttpLimits(body_timeout=0.1))
    proto.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    await asyncio.sleep(0.3)
    assert transport.closed
    assert status_and_code(transport.sent) == (408, "request_timeout")


async def test_a_fresh_silent_connection_is_closed_after_the_keep_alive_timeout() -> None:
    _, transport = protocol(HttpLimits(), keep_alive=0.05)
    await asyncio.sleep(0.2)
    assert transport.closed and transport.sent == b""
