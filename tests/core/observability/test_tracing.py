"""OpenTelemetry traces, as an operator's collector receives them: a real OTLP/HTTP
receiver on 127.0.0.1 decodes the protobuf exports of a gateway whose upstream is
the fake provider. A chat call, a stream, a fallback and a cache hit arrive with
the GenAI and Skygate attributes; a client's `traceparent` is the parent and each
attempt's reaches the provider; prompts stay out unless the tenant opted in; log
lines carry the trace id; a receiver that is down or never answers costs nothing
a client sees; and under gunicorn each worker exports its own spans, flushed when
it stops."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from bench.fake_upstream import run_in_thread as upstream_in_thread
from core.http.tracing import TracingMiddleware
from tests.support.app import settle
from tests.support.gateway import GatewayProcess
from tests.support.llm import LLMApp, router_yaml
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.otlp_receiver import run_in_thread as receiver_in_thread
from tests.support.requests import CHAT, chat
from tests.support.servers import free_port

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
SERVER_NAME = "POST /api/v1/chat/completions"
PROMPT = "the secret recipe is forty-two parts basil"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    server = OtlpReceiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def traced_app(llm_app: LLMApp, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> LLMApp:
    """`llm_app` exporting to `receiver`, batches sent every 50 ms (OTEL_BSP_SCHEDULE_DELAY)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")

    def factory(**options: Any) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        options.setdefault("otel_exporter_otlp_endpoint", receiver.url)
        return llm_app(**options)

    return factory


def in_trace(trace_id: str, name: str | None = None, kind: str | None = None) -> Any:
    def match(span: ReceivedSpan) -> bool:
        return (
            span.trace_id == trace_id
            and (name is None or span.name == name)
            and (kind is None or span.kind == kind)
        )

    return match


def json_lines(err: str) -> list[dict[str, Any]]:
    lines = []
    for line in err.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


async def test_a_chat_call_is_a_server_span_with_a_genai_client_span_under_the_callers_trace(
    traced_app: LLMApp,
    receiver: OtlpReceiver,
    upstream: FakeUpstream,
    capfd: pytest.CaptureFixture[str],
) -> None:
    async with traced_app() as (_, client):
        capfd.readouterr()
        response = await client.post(
            CHAT,
            json=chat(PROMPT, max_tokens=20, temperature=0.3),
            headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
        )
        assert response.status_code == 200
        (server,) = await receiver.wait_for(in_trace(CLIENT_TRACE, SERVER_NAME, "SERVER"))
        (attempt,) = await receiver.wait_for(in_trace(CLIENT_TRACE, "chat primary-1", "CLIENT"))
    err = capfd.readouterr().err

    assert server.parent_span_id == CLIENT_SPAN, "the client's traceparent is the parent"
    assert server.attributes["http.route"] == "/api/v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["skygate.request_id"] == response.headers["x-request-id"]
    assert server.attributes["skygate.tenant"] == "anonymous"
    assert server.attributes["skygate.model_group"] == "primary"
    assert server.attributes["skygate.cache"] == "miss"
    assert server.attributes["skygate.deployment"] == "primary/fake/primary-1#0"
    assert server.resource["service.name"] == "skygate"

    assert attempt.parent_span_id == server.span_id
    body = response.json()
    assert attempt.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai_compatible",
        "gen_ai.request.model": "primary-1",
        "gen_ai.request.stream": False,
        "gen_ai.request.max_tokens": 20,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.response.id": body["id"],
        "gen_ai.response.model": body["model"],
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": body["usage"]["prompt_tokens"],
        "gen_ai.usage.output_tokens": body["usage"]["completion_tokens"],
        "server.address": "127.0.0.1",
        "server.port": upstream.port,
        "skygate.deployment": "primary/fake/primary-1#0",
        "skygate.model_group": "primary",
    }
    assert attempt.status == "UNSET"

    sent = upstream.last_request("primary-1")
    assert sent is not None
    assert sent["headers"]["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"
    assert sent["headers"]["tracestate"] == "vendor=abc"

    everything = json.dumps([s.attributes for s in receiver.spans])
    assert "basil" not in everything, "no prompt or answer text without the tenant's opt-in"

    access = [line for line in json_lines(err) if line.get("event") == "request"]
    assert access and access[-1]["route"] == "/api/v1/chat/completions"
    assert access[-1]["trace_id"] == CLIENT_TRACE


async def test_a_streamed_call_has_its_usage_and_finish_reason_on_its_span(
    traced_app: LLMApp, receiver: OtlpReceiver, upstream: FakeUpstream
) -> None:
    async with traced_app() as (_, client):
        response = await client.post(
            CHAT, json=chat("stream me", stream=True), headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200 and response.text.rstrip().endswith("[DONE]")
        (server,) = await receiver.wait_for(in_trace(CLIENT_TRACE, SERVER_NAME))
        (attempt,) = await receiver.wait_for(in_trace(CLIENT_TRACE, "chat primary-1"))
    assert attempt.parent_span_id == server.span_id
    assert attempt.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attempt.attributes["gen_ai.usage.input_tokens"] > 0
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    assert attempt.attributes["gen_ai.response.id"].startswith("chatcmpl")
    assert "error.type" not in attempt.attributes
    assert server.attributes["skygate.deployment"] == "primary/fake/primary-1#0"
    sent = upstream.last_request("primary-1")
    assert sent is not None and sent["headers"]["traceparent"].split("-")[2] == attempt.span_id


async def test_a_fallback_shows_both_attempts_the_failed_one_with_its_error_type(
    traced_app: LLMApp,
    receiver: OtlpReceiver,
    upstream: FakeUpstream,
    capfd: pytest.CaptureFixture[str],
) -> None:
    upstream.set_behaviour("primary-1", "status", status=503)
    async with traced_app(attempts=0) as (_, client):
        capfd.readouterr()
        response = await client.post(CHAT, json=chat("fall back"))
        assert response.status_code == 200
        assert response.headers["x-skygate-model"] == "backup-1"
        (server,) = await receiver.wait_for(lambda s: s.name == SERVER_NAME)
        trace_id = server.trace_id
        (failed,) = await receiver.wait_for(in_trace(trace_id, "chat primary-1", "CLIENT"))
        (answered,) = await receiver.wait_for(in_trace(trace_id, "chat backup-1", "CLIENT"))
    err = capfd.readouterr().err

    assert server.parent_span_id == "", "no traceparent from the client: a new trace"
    assert failed.parent_span_id == answered.parent_span_id == server.span_id
    assert failed.attributes["error.type"] == "503" and failed.status == "ERROR"
    assert failed.attributes["skygate.model_group"] == "primary"
    assert "error.type" not in answered.attributes and answered.status == "UNSET"
    assert answered.attributes["skygate.model_group"] == "backup"
    assert server.attributes["skygate.deployment"] == "backup/fake/backup-1#0"
    assert server.attributes["skygate.model_group"] == "primary"

    lines = json_lines(err)
    failure = [line for line in lines if line.get("event") == "upstream_failed"]
    access = [line for line in lines if line.get("event") == "request"]
    assert failure and failure[0]["trace_id"] == trace_id, "every line of the request"
    assert access and access[-1]["trace_id"] == trace_id


async def test_a_translated_path_sends_the_attempts_traceparent_too(
    traced_app: LLMApp, receiver: OtlpReceiver, upstream: FakeUpstream
) -> None:
    async with traced_app() as (_, client):
        response = await client.post(
            CHAT, json=chat("hello claude", model="claude"), headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
        (attempt,) = await receiver.wait_for(in_trace(CLIENT_TRACE, "chat claude-haiku-4-5"))
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    assert attempt.attributes["gen_ai.usage.output_tokens"] > 0
    sent = upstream.last_request("claude-haiku-4-5")
    assert sent is not None and sent["path"].endswith("/messages")
    assert sent["headers"]["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-01"


async def test_an_embeddings_call_is_a_genai_embeddings_span(
    traced_app: LLMApp, receiver: OtlpReceiver
) -> None:
    async with traced_app() as (_, client):
        response = await client.post(
            "/api/v1/embeddings",
            json={"model": "embed", "input": ["one", "two"]},
            headers={"traceparent": TRACEPARENT},
        )
        assert response.status_code == 200, response.text
        (attempt,) = await receiver.wait_for(in_trace(CLIENT_TRACE, "embeddings embed-1", "CLIENT"))
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert (
        attempt.attributes["gen_ai.usage.input_tokens"] == response.json()["usage"]["prompt_tokens"]
    )
    assert "gen_ai.usage.output_tokens" not in attempt.attributes
    assert "gen_ai.request.stream" not in attempt.attributes
    assert attempt.status == "UNSET"


async def test_a_cache_hit_has_no_upstream_span(
    traced_app: LLMApp, receiver: OtlpReceiver, upstream: FakeUpstream, redis_url: str
) -> None:
    async with traced_app(redis_url=redis_url) as (app, client):
        first = await client.post(CHAT, json=chat("cache me"))
        await settle(app)
        second = await client.post(
            CHAT, json=chat("cache me"), headers={"traceparent": TRACEPARENT}
        )
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        (server,) = await receiver.wait_for(in_trace(CLIENT_TRACE, SERVER_NAME))
        await receiver.wait_for(lambda s: s.name == "chat primary-1")  # the first request's
    assert server.attributes["skygate.cache"] == "hit"
    assert server.attributes["skygate.model_group"] == "primary"
    assert "skygate.deployment" not in server.attributes
    assert receiver.find(in_trace(CLIENT_TRACE, kind="CLIENT")) == []
    assert upstream.calls("primary-1") == 1


async def test_an_opted_in_tenant_gets_its_prompt_and_answer_in_its_spans(
    traced_app: LLMApp, receiver: OtlpReceiver
) -> None:
    async with traced_app(otel_capture_content_tenants=["anonymous"]) as (_, client):
        response = await client.post(CHAT, json=chat(PROMPT), headers={"traceparent": TRACEPARENT})
        assert response.status_code == 200
        (attempt,) = await receiver.wait_for(in_trace(CLIENT_TRACE, "chat primary-1"))
    sent = json.loads(attempt.attributes["gen_ai.input.messages"])
    assert sent == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
    (answer,) = json.loads(attempt.attributes["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] == "stop"
    assert answer["parts"] == [
        {"type": "text", "content": response.json()["choices"][0]["message"]["content"]}
    ]


HOSTILE_TRACESTATES = [
    # oversized: 80 well-formed entries of 100-character values (8 KB)
    ",".join(f"k{i}=" + "v" * 100 for i in range(80)),
    # well-formed entries around ones that are not: control and non-ASCII characters,
    # an upper-case key, a key with no value, and a 600-character key
    "good=1,bad=\x7fmark,\u00fcber=2,UPPER=3,novalue=,ok@sys=4," + "x" * 600 + "=y,last=5",
    # many small entries (a vendor may keep 32)
    ",".join(f"m{i}=v" for i in range(100)),
]


@pytest.mark.parametrize("tracestate", HOSTILE_TRACESTATES, ids=["huge", "mixed", "many"])
async def test_a_hostile_tracestate_is_bounded_before_it_reaches_a_provider_or_a_log(
    traced_app: LLMApp,
    receiver: OtlpReceiver,
    upstream: FakeUpstream,
    capfd: pytest.CaptureFixture[str],
    tracestate: str,
) -> None:
    async with traced_app() as (_, client):
        capfd.readouterr()
        response = await client.post(
            CHAT,
            json=chat("hi"),
            headers={b"traceparent": TRACEPARENT.encode(), b"tracestate": tracestate.encode()},
        )
        assert response.status_code == 200
        (server,) = await receiver.wait_for(in_trace(CLIENT_TRACE, SERVER_NAME))
    assert server.parent_span_id == CLIENT_SPAN, "a bad tracestate does not cost the trace"
    sent = upstream.last_request("primary-1")
    assert sent is not None
    forwarded = sent["headers"].get("tracestate", "")
    assert len(forwarded) <= 512, "W3C: vendors propagate at most what they must (512)"
    members = [m for m in forwarded.split(",") if m]
    assert len(members) <= 32
    sent_members = [m.strip() for m in tracestate.split(",")]
    assert all(m in sent_members for m in members), "entries are kept or dropped, never mangled"
    assert members == [m for m in sent_members if m in members], "in the client's order"
    if tracestate.startswith("good="):
        assert members == ["good=1", "ok@sys=4", "last=5"], "only the valid entries survive"
    else:
        assert members, "valid entries are kept up to the bound"
    err = capfd.readouterr().err
    assert "vvvvvvvvvv" not in err and "xxxxxxxxxx" not in err and "m99=v" not in err, (
        "the client's header is not written into the logs"
    )


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{'0' * 32}-{CLIENT_SPAN}-01",  # an all-zero trace id
        f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01",  # the forbidden version
        f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01",  # upper-case hex
        "00-" + "a" * 5000,
    ],
)
async def test_a_malformed_traceparent_starts_a_fresh_trace(
    traced_app: LLMApp, receiver: OtlpReceiver, upstream: FakeUpstream, traceparent: str
) -> None:
    async with traced_app() as (_, client):
        response = await client.post(
            CHAT, json=chat("hi"), headers={"traceparent": traceparent, "tracestate": "a=b"}
        )
        assert response.status_code == 200
        (server,) = await receiver.wait_for(lambda s: s.name == SERVER_NAME)
    assert server.trace_id != CLIENT_TRACE and server.parent_span_id in ("", None)
    sent = upstream.last_request("primary-1")
    assert sent is not None
    assert sent["headers"]["traceparent"].startswith(f"00-{server.trace_id}-")
    assert "tracestate" not in sent["headers"], "no tracestate without a valid traceparent"


async def test_without_an_endpoint_nothing_is_traced_or_forwarded(
    llm_app: LLMApp, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    async with llm_app() as (app, client):
        assert TracingMiddleware not in [m.cls for m in app.user_middleware]
        capfd.readouterr()
        response = await client.post(CHAT, json=chat("hi"), headers={"traceparent": TRACEPARENT})
        assert response.status_code == 200
    sent = upstream.last_request("primary-1")
    assert sent is not None and "traceparent" not in sent["headers"]
    access = [line for line in json_lines(capfd.readouterr().err) if line.get("event") == "request"]
    assert access and "trace_id" not in access[-1]


@pytest.fixture
def silent_receiver() -> Iterator[str]:
    """An OTLP endpoint that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.parametrize("down", ["refused", "silent"])
async def test_a_receiver_that_is_down_costs_clients_nothing_and_exit_stays_bounded(
    down: str,
    llm_app: LLMApp,
    silent_receiver: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    endpoint = f"http://127.0.0.1:{free_port()}" if down == "refused" else silent_receiver
    if down == "refused":  # retries end sooner (the exit's bound applies either way)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    else:  # the export thread hangs on its first batch: the small queue fills, then drops
        monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
        monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    async with llm_app(otel_exporter_otlp_endpoint=endpoint) as (_, client):
        for index in range(5):
            started = time.monotonic()
            response = await client.post(CHAT, json=chat(f"still here {index}"))
            assert response.status_code == 200
            # Exports to it wait up to OTEL_EXPORTER_OTLP_TIMEOUT (10 s); none of that here.
            assert time.monotonic() - started < 2.0
            await asyncio.sleep(0.05)  # let the export thread try between requests
        stopping = time.monotonic()
    # The flush waits 5 s at most (SHUTDOWN_SECONDS), not the SDK's 30 s per shutdown.
    assert time.monotonic() - stopping < 9.0, "the flush on exit is bounded"
    if down == "silent":
        drops = [line for line in capfd.readouterr().err.splitlines() if "queue full" in line]
        assert len(drops) == 1, "spans dropped: said once, not once per span"


@pytest.mark.slow
def test_each_gunicorn_worker_exports_its_own_spans_flushed_when_it_stops(
    tmp_path: Path, sqlite_url: str
) -> None:
    upstream, stop_upstream = upstream_in_thread()
    receiver, stop_receiver = receiver_in_thread()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(upstream))
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_url,
            "ROUTER_CONFIG": str(config),
            "FAKE_ANTHROPIC_KEY": "k",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            # Nothing leaves on a timer: what arrives was flushed by each worker's exit.
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
            "OTEL_SERVICE_NAME": "skygate-test",
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        assert len(gateway.worker_pids()) == 2
        answered = set()
        for index in range(12):  # a connection each: the workers share them out evenly
            response = httpx.post(
                f"{gateway.base_url}{CHAT}", json=chat(f"worker {index}"), timeout=10
            )
            assert response.status_code == 200
            answered.add(response.headers["x-request-id"])
        assert receiver.spans == [], "no export before the flush on exit"
        gateway.signal(signal.SIGTERM)
        assert gateway.wait_exit(30) == 0
        servers = receiver.wait_for_blocking(lambda s: s.name == SERVER_NAME, count=12)
        attempts = receiver.wait_for_blocking(lambda s: s.name == "chat primary-1", count=12)
    finally:
        gateway.stop()
        stop_receiver()
        stop_upstream()
    assert {s.attributes["skygate.request_id"] for s in servers} == answered
    assert receiver.find(lambda s: s.attributes.get("url.path") == "/live") == [], "no probes"
    instances = {s.resource["service.instance.id"] for s in servers}
    assert len(instances) == 2, "one provider per worker, built after the fork"
    assert {s.resource["service.name"] for s in servers} == {"skygate-test"}
    parents = {s.span_id for s in servers}
    assert all(a.parent_span_id in parents for a in attempts)
    access = [
        line
        for line in json_lines(gateway.logs())
        if line.get("event") == "request" and line.get("route") == CHAT
    ]
    assert {line["trace_id"] for line in access} == {s.trace_id for s in servers}
