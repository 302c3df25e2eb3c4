"""A GenAI CLIENT span per upstream attempt: a wrapper around each provider, put in
place by the factory only when tracing is on (`core.observability.tracing`).

The router calls a provider once per attempt, so wrapping the provider makes every
retry and every fallback a span of its own, without the router knowing about
tracing. Each span follows OpenTelemetry's GenAI conventions: named
`{gen_ai.operation.name} {gen_ai.request.model}` (`chat gpt-4o-mini`, the
deployment's model), kind CLIENT, with the request's parameters, the answer's id,
model, finish reasons and token usage, `server.address`/`server.port` of the
deployment's base URL, and `error.type` when the attempt failed: the HTTP status
(`"429"`), or the failure's kind (`timeout`, `connect`, `garbage`, `cut`, `local`),
or `cancelled` when the caller gave up on it. Skygate's `skygate.deployment` and
`skygate.model_group` say which deployment of which group was tried.

The span is current while the provider sends its request, so the provider's headers
carry its `traceparent` (`core.observability.tracing.inject`). For a stream that is
the first read; the span ends when the stream does, however it ends.

Prompt and answer text are attributes only for tenants an operator opted in
(OTEL_CAPTURE_CONTENT_TENANTS), redacted like log lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import context, trace
from opentelemetry.util.types import AttributeValue

from core.llm.providers import PROVIDERS
from core.llm.types import Chunk, Completion, Deployment, Provider, ProviderError
from core.observability.logging import redactor
from core.observability.tracing import current_request

_DEFAULT_PORTS = {"http": 80, "https": 443}


class TracedProvider:
    """`inner`, with a CLIENT span around each call."""

    def __init__(self, inner: Provider, tracer: trace.Tracer) -> None:
        self.inner = inner
        self.tracer = tracer
        self._servers: dict[str, dict[str, AttributeValue]] = {}

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        return await self._whole("chat", deployment, body, self.inner.complete)

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        return await self._whole("embeddings", deployment, body, self.inner.embed)

    async def _whole(
        self,
        operation: str,
        deployment: Deployment,
        body: dict[str, Any],
        call: Callable[[Deployment, dict[str, Any]], Awaitable[Completion]],
    ) -> Completion:
        """One whole answer (a chat completion, or embeddings) inside its CLIENT span,
        current while the request goes out so that it carries the span's traceparent."""
        chat = operation == "chat"
        span, capture = self._start(operation, deployment, body, stream=False if chat else None)
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                answer = await call(deployment, body)
            except BaseException as exc:
                _failed(span, exc)
                raise
            _answering(deployment)
            usage = answer.usage
            output_tokens = usage.completion_tokens if chat else None
            _answered(span, answer.data, usage.prompt_tokens, output_tokens)
            if capture and chat:
                _capture_output(span, answer.data.get("choices"))
            return answer

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        span, capture = self._start("chat", deployment, body, stream=True)
        inner = self.inner.stream(deployment, body)
        seen = _StreamSeen(capture)
        try:
            # Current only for the first read, when the request goes out; the reads that
            # follow run in another task and send nothing.
            token = context.attach(trace.set_span_in_context(span))
            try:
                first = await anext(inner, None)
            finally:
                context.detach(token)
            if first is None:  # the router calls it garbage
                _failed(span, ProviderError("garbage", f"{deployment.id} sent an empty stream"))
                return
            _answering(deployment)
            seen.add(first.data)
            yield first
            async for chunk in inner:
                seen.add(chunk.data)
                yield chunk
        except BaseException as exc:  # GeneratorExit too: the reader closed the stream
            _failed(span, exc)
            raise
        else:
            reasons = seen.finish_reasons()
            _answered(span, seen.last, seen.input_tokens, seen.output_tokens, reasons)
            if capture:
                _capture_output(span, seen.choices())
        finally:
            try:
                await inner.aclose()  # type: ignore[attr-defined]
            finally:
                span.end()

    async def close(self) -> None:
        await self.inner.close()

    def _start(
        self, operation: str, deployment: Deployment, body: dict[str, Any], *, stream: bool | None
    ) -> tuple[trace.Span, bool]:
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDERS[deployment.kind].trace_name,
            "gen_ai.request.model": deployment.model,
            "skygate.deployment": deployment.id,
            "skygate.model_group": deployment.group,
            **self._server(deployment),
        }
        if stream is not None:
            attributes["gen_ai.request.stream"] = stream
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(max_tokens, int):
            attributes["gen_ai.request.max_tokens"] = max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = body.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[f"gen_ai.request.{name}"] = value
        record = current_request()
        capture = record is not None and record.capture
        if capture and operation == "chat":
            attributes["gen_ai.input.messages"] = _json(_input_messages(body.get("messages")))
        span = self.tracer.start_span(
            f"{operation} {deployment.model}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )
        return span, capture

    def _server(self, deployment: Deployment) -> dict[str, AttributeValue]:
        """`server.address`/`server.port` of the deployment's base URL, parsed once
        (unknown for litellm providers that use their default endpoint)."""
        known = self._servers.get(deployment.id)
        if known is None:
            known = {}
            if deployment.api_base:
                parts = urlsplit(deployment.api_base)
                if parts.hostname:
                    known["server.address"] = parts.hostname
                    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
                    if port:
                        known["server.port"] = port
            self._servers[deployment.id] = known
        return known


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        if exc.kind == "status":
            return str(exc.status) if exc.status else "status"
        return exc.kind
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def _failed(span: trace.Span, exc: BaseException) -> None:
    span.set_attribute("error.type", _error_type(exc))
    message = exc.message if isinstance(exc, ProviderError) else ""
    span.set_status(trace.StatusCode.ERROR, redactor.scrub_text(message[:200]) or None)


def _answering(deployment: Deployment) -> None:
    """The request's span names the deployment that answered (the last to, when one
    request makes several calls)."""
    record = current_request()
    if record is not None:
        record.span.set_attribute("skygate.deployment", deployment.id)


def _answered(
    span: trace.Span,
    data: dict[str, Any],
    input_tokens: int | None,
    output_tokens: int | None,
    finish_reasons: list[str] | None = None,
) -> None:
    attributes: dict[str, AttributeValue] = {}
    for name, key in (("gen_ai.response.id", "id"), ("gen_ai.response.model", "model")):
        value = data.get(key)
        if isinstance(value, str) and value:
            attributes[name] = value
    if finish_reasons is None:
        choices = data.get("choices")
        finish_reasons = [
            c["finish_reason"]
            for c in (choices if isinstance(choices, list) else ())
            if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        ]
    if finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = finish_reasons
    if input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = output_tokens
    span.set_attributes(attributes)


class _StreamSeen:
    """What a stream's chunks said, for its span: the last id and model, usage, the
    finish reasons and, when captured, each choice's text."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.last: dict[str, Any] = {}
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self._finish: dict[int, str] = {}
        self._text: dict[int, list[str]] = {}

    def add(self, data: dict[str, Any]) -> None:
        if "id" in data or "model" in data:
            self.last = {"id": data.get("id"), "model": data.get("model")}
        usage = data.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.input_tokens = prompt if isinstance(prompt, int) else self.input_tokens
            self.output_tokens = completion if isinstance(completion, int) else self.output_tokens
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self._finish[index] = reason
            if self.capture:
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str):
                    self._text.setdefault(index, []).append(text)

    def finish_reasons(self) -> list[str]:
        return [self._finish[i] for i in sorted(self._finish)]

    def choices(self) -> list[dict[str, Any]]:
        indexes = sorted(set(self._text) | set(self._finish))
        return [
            {
                "message": {"role": "assistant", "content": "".join(self._text.get(i, ()))},
                "finish_reason": self._finish.get(i),
            }
            for i in indexes
        ]


# -- captured content, in the GenAI conventions' message shape ---------------------------


def _json(value: Any) -> str:
    return redactor.scrub_text(orjson.dumps(value).decode())


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, str):
        if message.get("role") == "tool":
            parts.append(
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "response": content,
                }
            )
        else:
            parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append({"type": "text", "content": part.get("text")})
            elif isinstance(part, dict):  # images, audio, files: their kind, not their bytes
                parts.append({"type": str(part.get("type"))})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return parts


def _input_messages(messages: Any) -> list[dict[str, Any]]:
    return [
        {"role": m.get("role"), "parts": _parts(m)}
        for m in (messages if isinstance(messages, list) else ())
        if isinstance(m, dict)
    ]


def _capture_output(span: trace.Span, choices: Any) -> None:
    output = [
        {
            "role": "assistant",
            "parts": _parts(c["message"]) if isinstance(c.get("message"), dict) else [],
            "finish_reason": c.get("finish_reason"),
        }
        for c in (choices if isinstance(choices, list) else ())
        if isinstance(c, dict)
    ]
    span.set_attribute("gen_ai.output.messages", _json(output))
