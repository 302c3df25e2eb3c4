"""A real HTTP/1.1 server on 127.0.0.1 (or ::1) for the tool tests, written on asyncio streams.

Hand-rolled rather than uvicorn because the tests must count TCP connections, not
requests: "refused before any connect" is proved by a listener that was never
accepted on. Each connection serves one request and closes. The fixtures that start
one are in tests/agents/conftest.py.

Routes (by path; query parameters as noted):
  /text              200 text/plain greeting
  /binary            200 application/octet-stream
  /big?n=N           200 text/plain, N bytes of "a", written in 16 KiB chunks
  /redirect?to=URL   302 to URL
  /loop?n=K          302 to /loop?n=K+1, forever
  /slow              waits until the test ends (a tool's deadline must fire)
  /cookie            200, with Set-Cookie
  anything else      200 application/json echo: method, target, headers, body
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class EchoServer:
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._released.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (a size cap or a deadline): what some tests do
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _version = request_line.split(" ")
        headers = {}
        for line in lines:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Seen(method, target, headers, body))
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/text":
            await _respond(writer, 200, "text/plain; charset=utf-8", b"hello from the test server")
        elif path == "/binary":
            await _respond(writer, 200, "application/octet-stream", b"\x00\x01\x02")
        elif path == "/big":
            size = int(query["n"])
            writer.write(_head(200, "text/plain", [("Content-Length", str(size))]))
            while size > 0:
                writer.write(b"a" * min(size, 16384))
                size -= 16384
                await writer.drain()
        elif path == "/redirect":
            await _respond(writer, 302, "text/plain", b"", [("Location", query["to"])])
        elif path == "/loop":
            location = f"/loop?n={int(query.get('n', '0')) + 1}"
            await _respond(writer, 302, "text/plain", b"", [("Location", location)])
        elif path == "/slow":
            await self._released.wait()
        elif path == "/cookie":
            cookie = [("Set-Cookie", "session=tenant-a; Path=/")]
            await _respond(writer, 200, "text/plain", b"cookie set", cookie)
        else:
            echo = {
                "method": method,
                "target": target,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
            }
            await _respond(writer, 200, "application/json", json.dumps(echo).encode())


def _head(status: int, content_type: str, extra: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    writer.write(_head(status, content_type, [("Content-Length", str(len(body))), *(extra or [])]))
    writer.write(body)
    await writer.drain()
