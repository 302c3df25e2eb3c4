"""The worker's HTTP protocol: a response head leaves with its body in one
write, and a head whose body is not ready yet (a stream) still leaves at once."""

from __future__ import annotations

import asyncio
from typing import Any

from core.serving import _HeadWithBody


class RecordingTransport(asyncio.Transport):
    """A transport that records what would be sent (no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

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
