"""A real OTLP/HTTP trace receiver on 127.0.0.1 for tests: an aiohttp server that
decodes each `ExportTraceServiceRequest` (protobuf, gzip or not) with the
opentelemetry-proto messages and keeps its spans, flattened.

    receiver = OtlpReceiver()
    await receiver.start()                 # in the running loop
    receiver.url                           # OTEL_EXPORTER_OTLP_ENDPOINT for the gateway
    span = await receiver.wait_for(lambda s: s.name == "chat primary-1")
    await receiver.stop()

or `run_in_thread()` for a receiver on its own loop (a gateway process exporting to it
while the test thread blocks).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.servers import free_port

_KINDS = {
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUS = {
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # SERVER, CLIENT, INTERNAL, ...
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    status: str  # UNSET, OK, ERROR
    resource: dict[str, Any] = field(repr=False)
    scope: str = ""


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def _attributes(items: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(items)
    return {kv.key: _value(kv.value) for kv in pairs}


def decode(payload: bytes) -> list[ReceivedSpan]:
    """The spans of one ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        status=_STATUS.get(span.status.code, str(span.status.code)),
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


class OtlpReceiver:
    """Records every span POSTed to `/v1/traces`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL (OTEL_EXPORTER_OTLP_ENDPOINT); spans go to `<url>/v1/traces`."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _traces(self, request: web.Request) -> web.Response:
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        self.requests += 1
        self.content_types.add(request.headers.get("Content-Type", ""))
        self.spans.extend(decode(raw))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def find(self, predicate: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        return [s for s in list(self.spans) if predicate(s)]

    async def wait_for(
        self, predicate: Callable[[ReceivedSpan], bool], *, count: int = 1, within: float = 15
    ) -> list[ReceivedSpan]:
        """The matching spans, once at least `count` have arrived."""
        deadline = time.monotonic() + within
        while True:
            found = self.find(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans})
                raise AssertionError(f"{count} matching span(s) not received; got {names}")
            await asyncio.sleep(0.05)

    def wait_for_blocking(
        self, predicate: Callable[[ReceivedSpan], bool], *, count: int = 1, within: float = 15
    ) -> list[ReceivedSpan]:
        """`wait_for` from a thread that is not the receiver's (see `run_in_thread`)."""
        deadline = time.monotonic() + within
        while True:
            found = self.find(predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                names = sorted({s.name for s in self.spans})
                raise AssertionError(f"{count} matching span(s) not received; got {names}")
            time.sleep(0.05)


def run_in_thread() -> tuple[OtlpReceiver, Callable[[], None]]:
    """A started receiver on its own event loop in a daemon thread, and its stop."""
    receiver = OtlpReceiver()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(receiver.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="otlp-receiver", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the OTLP receiver did not start")

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    return receiver, stop
