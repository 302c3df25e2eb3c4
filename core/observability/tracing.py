"""OpenTelemetry traces: on only when an OTLP endpoint is set, and free when not.

What is traced, and by whom:
- a SERVER span per HTTP request (`core.http.tracing`), named by the HTTP conventions
  (`POST /api/v1/chat/completions`), carrying Skygate's own attributes: `skygate.tenant`,
  `skygate.model_group`, `skygate.cache` (hit, miss, bypass) set by the pipeline
  (`annotate_request`, `annotate_cache`), and `skygate.deployment` (the one that answered);
- a CLIENT span per upstream attempt (`core.llm.traced`), named and attributed by the
  GenAI conventions (`chat gpt-4o-mini`, `gen_ai.*`), so retries and fallbacks are spans
  of their own, each with its `error.type` when it failed.

The W3C trace context (`traceparent`, `tracestate`) is accepted from clients and sent
to providers on each attempt (`inject`); baggage is neither (it is arbitrary client
data, and nothing a client sends may choose a header a provider receives). A client's
`tracestate` is cut to what W3C asks a vendor to propagate (`client_context`): valid
entries only, at most 32 and 512 characters, so a hostile header is neither forwarded
whole to every provider nor echoed into a warning log line per request.

Off (neither endpoint set): no SDK is imported, no middleware is installed, and the
request path pays a context lookup where it annotates or injects (~0.2 us each).
On: the SDK's `TracerProvider` is built in each process after it forks (the lifespan
of each gunicorn worker, never the master), and spans leave through a
`BatchSpanProcessor` on its own thread: ended spans go into a bounded queue
(OTEL_BSP_MAX_QUEUE_SIZE, 2048) that drops the oldest when full rather than block a
request, exported every OTEL_BSP_SCHEDULE_DELAY (5 s) or per OTEL_BSP_MAX_EXPORT_BATCH_SIZE
(512) over OTLP/HTTP protobuf. On exit the queue is flushed for at most
`SHUTDOWN_SECONDS`. A receiver that is down costs exports (retried by the exporter for at
most OTEL_EXPORTER_OTLP_TIMEOUT, 10 s, on that thread), never a request.

Prompt and answer text are never attributes unless the tenant is listed in
OTEL_CAPTURE_CONTENT_TENANTS; then they go, redacted like logs, into
`gen_ai.input.messages` / `gen_ai.output.messages` (the conventions' JSON shape).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = structlog.get_logger("skygate.tracing")
TRACER_NAME = "skygate"
SHUTDOWN_SECONDS = 5.0  # the flush on exit; well inside gunicorn's graceful timeout
# Every attribute value is cut to this length unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT
# (or OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT) sets one: a captured prompt can be
# megabytes, and 2048 queued spans of it would be gigabytes.
DEFAULT_ATTRIBUTE_LENGTH = 16 * 1024
EVERY_TENANT = "*"

PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent + tracestate, no baggage
# W3C trace context: a traceparent is 55 characters (version 00) and the SDK ignores
# one over 512; a vendor must propagate 512 characters of tracestate, in at most 32
# entries, dropping entries over 128 characters first, then from the end.
_TRACEPARENT_LENGTH = 512
_TRACESTATE_LENGTH = 512
_TRACESTATE_ENTRIES = 32
_TRACESTATE_ENTRY = 128
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_REQUEST = context.create_key("skygate.request")


@dataclass(slots=True)
class RequestTrace:
    """The request's server span, and whether its tenant's content may be captured.
    Lives in the OpenTelemetry context the middleware attaches for the request, so it
    ends with the request and is seen by the tasks the request starts."""

    span: trace.Span
    capture_tenants: frozenset[str]
    capture: bool = False


def client_context(traceparent: str | None, tracestate: str | None) -> context.Context | None:
    """The parent a client's W3C headers name (None for none, or a malformed one), with
    its tracestate bounded as W3C allows a vendor: invalid and over-long entries and
    repeated keys dropped, then entries from the end until 32 and 512 characters fit.
    Done here, not by the SDK, which would log a warning quoting the hostile entry
    and keep the whole header when every entry is valid."""
    if traceparent is None or len(traceparent) > _TRACEPARENT_LENGTH:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        kept: list[str] = []
        keys: set[str] = set()
        size = -1  # the first entry needs no comma
        for member in tracestate.split(","):
            member = member.strip(" \t")
            if len(member) > _TRACESTATE_ENTRY or not _TRACESTATE_MEMBER.fullmatch(member):
                continue
            key = member.partition("=")[0]
            if key in keys:
                continue
            if size + 1 + len(member) > _TRACESTATE_LENGTH:
                break
            keys.add(key)
            kept.append(member)
            size += 1 + len(member)
            if len(kept) == _TRACESTATE_ENTRIES:
                break
        if kept:
            carrier["tracestate"] = ",".join(kept)
    return PROPAGATOR.extract(carrier)


def traces_endpoint(settings: Settings) -> str | None:
    """Where spans go: the traces URL as given, else `<base>/v1/traces` (the SDK's rule)."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    return None


class Tracing:
    """A process's tracing. Built with the app (no I/O, no SDK); `running()` builds the
    SDK's provider in the process that serves (after gunicorn's fork) and shuts it down,
    flushing within `SHUTDOWN_SECONDS`. `tracer` is None whenever tracing is off."""

    def __init__(self, settings: Settings) -> None:
        self.endpoint = traces_endpoint(settings)
        self.capture_tenants = frozenset(settings.otel_capture_content_tenants)
        self.version = settings.version
        self.environment = settings.environment
        self.tracer: trace.Tracer | None = None
        self._provider: TracerProvider | None = None
        self._processor: BatchSpanProcessor | None = None

    @property
    def configured(self) -> bool:
        return self.endpoint is not None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Tracing]:
        self.start()
        try:
            yield self
        finally:
            await asyncio.to_thread(self.stop)

    def start(self) -> None:
        if self.endpoint is None or self._provider is not None:
            return
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Skygate's defaults, then what OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say.
        # Each worker is an instance of its own (its spans come from its own provider).
        defaults = {
            "service.name": "skygate",
            "service.version": self.version,
            "service.instance.id": uuid.uuid4().hex,
            "deployment.environment.name": self.environment,
        }
        resource = Resource.create({**defaults, **OTELResourceDetector().detect().attributes})
        limits = SpanLimits()  # the OTEL_*_LIMIT variables
        if limits.max_span_attribute_length is None:  # unlimited unless set
            limits.max_span_attribute_length = DEFAULT_ATTRIBUTE_LENGTH
        # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (default: parent-based, always on).
        provider = TracerProvider(resource=resource, span_limits=limits, shutdown_on_exit=False)
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint))  # OTEL_BSP_*
        provider.add_span_processor(processor)
        _quiet_drops()
        self._provider, self._processor = provider, processor
        self.tracer = provider.get_tracer(TRACER_NAME, self.version)

    def stop(self) -> None:
        """Flush what is queued and stop the export thread, within `SHUTDOWN_SECONDS`.

        `BatchSpanProcessor.shutdown()` takes no bound: it waits up to 30 s for the
        export thread, which may sit in the exporter's retries for OTEL_EXPORTER_OTLP_TIMEOUT
        per batch. Its batch processor's own shutdown takes one: past it, no further
        batch is sent and the exporter stops retrying. That call (an SDK internal, hence
        the fallback to the public one) runs on a daemon thread, so even a shutdown that
        overruns cannot hold the process past the bound."""
        provider, processor = self._provider, self._processor
        self.tracer = self._provider = self._processor = None
        if provider is None or processor is None:
            return
        batch = getattr(processor, "_batch_processor", None)
        bounded = getattr(batch, "shutdown", None)

        def shutdown() -> None:
            if callable(bounded):
                bounded(timeout_millis=int(SHUTDOWN_SECONDS * 1000))
            provider.shutdown()  # (what is already shut down returns at once)

        flushing = threading.Thread(target=shutdown, name="otel-shutdown", daemon=True)
        flushing.start()
        flushing.join(SHUTDOWN_SECONDS + 1.0)
        if flushing.is_alive():
            log.warning("trace_flush_unfinished", seconds=SHUTDOWN_SECONDS, endpoint=self.endpoint)


# -- the request path: each a context lookup when tracing is off ---------------------


def current_request() -> RequestTrace | None:
    found = context.get_value(_REQUEST)
    return found if isinstance(found, RequestTrace) else None


def request_context(record: RequestTrace, parent: context.Context | None) -> context.Context:
    """The context a request runs in: its span current, its record reachable."""
    return context.set_value(_REQUEST, record, trace.set_span_in_context(record.span, parent))


def annotate_request(*, tenant: str, group: str) -> None:
    """Who asked for which model group, on the request's span."""
    record = current_request()
    if record is None:
        return
    record.span.set_attributes({"skygate.tenant": tenant, "skygate.model_group": group})
    capture = record.capture_tenants
    record.capture = bool(capture) and (tenant in capture or EVERY_TENANT in capture)


def annotate_cache(status: str) -> None:
    """The cache's verdict (hit, miss, bypass), on the request's span."""
    record = current_request()
    if record is not None:
        record.span.set_attribute("skygate.cache", status)


def inject(headers: dict[str, str]) -> None:
    """Add `traceparent` (and `tracestate`) of the current span to an upstream call's
    headers; nothing when no span is current (tracing off, or outside a request)."""
    if trace.get_current_span().get_span_context().is_valid:
        PROPAGATOR.inject(headers)


def trace_headers() -> dict[str, str] | None:
    """The headers `inject` adds, or None when there are none."""
    headers: dict[str, str] = {}
    inject(headers)
    return headers or None


def trace_id_hex(span: trace.Span) -> str:
    return trace.format_trace_id(span.get_span_context().trace_id)


# -- the SDK's logging -----------------------------------------------------------------


class _OncePerMinute(logging.Filter):
    """The batch processor warns once per span it drops ("Queue full, dropping Span"):
    under overload, a log line per request. One a minute says the same."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Queue full"):
            return True
        self._dropped += 1
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 60.0
        record.msg, record.args = "trace queue full, dropping spans (%d so far)", (self._dropped,)
        return True


_DROP_FILTER = _OncePerMinute()


def _quiet_drops() -> None:
    logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    if _DROP_FILTER not in logger.filters:
        logger.addFilter(_DROP_FILTER)
