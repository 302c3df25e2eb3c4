"""A local OTLP/HTTP trace sink for the benchmark's tracing-on cell: it accepts what a
collector would (`POST /v1/traces`, protobuf `ExportTraceServiceRequest`), counts the
spans, and answers at once, so the cell measures what tracing costs the gateway, not
a collector.

    python -m bench.otlp_sink --port 4318      # GET /stats: {"requests", "spans", "bytes"}

`gateway_env(port)` is what Skygate needs to export to it: the endpoint, and nothing
else, so the SDK's defaults (a batch every 5 s or per 512 spans, a queue of 2048) are
what is measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.servers import free_port

_EMPTY = ExportTraceServiceResponse().SerializeToString()


def gateway_env(port: int) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}


def stats(port: int) -> dict[str, Any]:
    """The sink's counts so far (from another process)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        found: dict[str, Any] = json.loads(response.read())
    return found


def make_app() -> web.Application:
    counts = {"requests": 0, "spans": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        raw = await request.read()
        message = ExportTraceServiceRequest()
        message.ParseFromString(raw)
        counts["requests"] += 1
        counts["bytes"] += len(raw)
        counts["spans"] += sum(
            len(scope.spans)
            for resource in message.resource_spans
            for scope in resource.scope_spans
        )
        return web.Response(body=_EMPTY, content_type="application/x-protobuf")

    async def show(_: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", show)
    return app


def measure_traced(
    run: Any, *, settings: Any, latency: float, concurrency: int, upstream: Any, pg: Any,
    redis: Any, creds: Any, workdir: Path, infra: list[int], budget: Any,
) -> None:  # fmt: skip
    """`bench.run`'s tracing-on cells, added to `run.variants`: Skygate exporting every
    span to a sink started here, in the cells of the LOG_LEVEL=WARNING variant (the first
    upstream latency, 16 clients, every mode), to compare with the run's tracing-off
    "skygate" cells. The sink's CPU counts with PostgreSQL's and Redis's (a collector is
    infrastructure), not as noise; its counts go to `run.settings["otlp_sink"]`."""
    from bench import run as harness  # here: `bench.run` imports this module lazily

    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    sink = harness.Service(
        "otlp-sink", [str(harness.VENV_BIN / "python"), "-m", "bench.otlp_sink", "--port",
                      str(port)], env, workdir / "otlp-sink.log",
    ).start()  # fmt: skip
    target = None
    try:
        harness.wait_until(
            "otlp sink", lambda: (harness.http_request(port, "GET", "/stats") or (0,))[0] == 200,
            sink, 30,
        )  # fmt: skip
        traced = dataclasses.replace(
            settings, gateway_env={**settings.gateway_env, **gateway_env(port)}
        )
        target = harness.start_skygate(
            "skygate-traced", "Skygate, tracing on", latency, upstream, pg, redis, creds,
            workdir, traced,
        )  # fmt: skip
        harness.say("measuring the tracing-on variant (OTLP/HTTP to a local sink)")
        run.variants += harness._cells_for(
            [target], latency, traced, upstream, [*infra, sink.pid], run.run_id, [concurrency],
            budget, redis.port,
        )  # fmt: skip
        harness._finish_target(target, run)  # stops it: its last spans are flushed
        target = None
        run.settings["otlp_sink"] = stats(port)
        harness.say(f"OTLP sink received {run.settings['otlp_sink']}")
    finally:
        if target is not None:
            target.service.stop()
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
