"""The request pipeline for chat completions and embeddings.

One request, top to bottom: validate -> resolve the model group -> cache lookup
-> router (retries, fallbacks) -> cache store -> usage -> metrics. Each step is
one call into a module that does one thing and never calls back. Every upstream
call runs inside a ledger (`core.gateway.ledger`) that writes its one usage record and
settles limits and spend however the call ends. Transport (HTTP, WebSocket) is
the caller's business: this module returns bytes and headers, or SSE events
that the transport must `aclose()` when its response ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
)
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from core.errors import NotFoundError, note_answered
from core.gateway.cache import CacheDirectives, ResponseCache, cache_key
from core.gateway.ledger import Accounts, Ledger, MeteredStream, prompt_tokens
from core.gateway.streams import (
    DONE,
    HEARTBEAT,
    StreamAssembler,
    cacheable,
    client_payload,
    pump,
    replay,
    sse,
    sse_error,
)
from core.gateway.usage import UsageRecorder
from core.gateway.validation import validate_chat, validate_embeddings
from core.limits.admission import Admission, Caller, TokenGrant
from core.llm.failures import to_gateway_error
from core.llm.router import NoDeploymentAvailable, Router, StreamHandle
from core.llm.types import Chunk, Deployment, ProviderError
from core.observability import metrics, tracing

log = structlog.get_logger("skygate.completions")
Admit = Callable[[], Awaitable[None]]
DEFAULT_TOKEN_ESTIMATE = 1024  # completion tokens assumed at admission without max_tokens


@dataclass(slots=True)
class Answer:
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class StreamAnswer:
    """SSE events. The transport must `aclose()` them however its response ends
    (the upstream call stops and its ledger settles then)."""

    events: MeteredStream | AsyncGenerator[bytes, None]
    headers: dict[str, str]


@dataclass(slots=True)
class Upstream:
    """Admitted and not in the cache: the answer needs the provider. The caller
    awaits `call`, and cancels it if its client goes away."""

    call: Coroutine[Any, Any, Answer | StreamAnswer]


@dataclass(slots=True)
class _Request:
    caller: Caller
    group: str
    endpoint: str
    body: dict[str, Any]
    directives: CacheDirectives
    started: float = field(default_factory=time.perf_counter)
    upstream_seconds: float = 0.0
    cache_status: str = "bypass"
    grant: TokenGrant | None = None


class CompletionService:
    def __init__(
        self,
        *,
        router: Router,
        cache: ResponseCache,
        usage: UsageRecorder,
        heartbeat_seconds: float,
        admission: Admission,
        demo: bool = False,
    ) -> None:
        self.router = router
        self.cache = cache
        self.usage = usage
        self.admission = admission
        self.heartbeat_seconds = heartbeat_seconds
        self.demo = demo
        self._background: set[asyncio.Task[None]] = set()
        self.accounts = Accounts(
            usage=usage, admission=admission, router=router, background=self._in_background
        )

    # -- entry points -----------------------------------------------------------
    async def chat(
        self,
        caller: Caller,
        body: dict[str, Any],
        directives: CacheDirectives,
        admit: Admit | None = None,
    ) -> Answer | StreamAnswer | Upstream:
        """`admit`: the caller's request-rate check, if it has not run yet."""
        request = validate_chat(body)
        req = _Request(caller, self._resolve(request.model), "chat", body, directives)
        tracing.annotate_request(tenant=caller.tenant, group=req.group)
        await self.admission.authorize(req.caller, req.group)
        options = body.get("stream_options")  # the validated body, whatever model holds it
        include_usage = bool(
            request.stream and isinstance(options, dict) and options.get("include_usage")
        )
        key = self._key(req)
        max_tokens = request.max_completion_tokens or request.max_tokens or DEFAULT_TOKEN_ESTIMATE
        prompt = prompt_tokens(body.get("messages"))
        estimate = prompt + max_tokens * (request.n or 1)
        cached = await self._gate(req, key, admit, estimate)
        if cached is not None:
            data = orjson.loads(cached)
            self.accounts.hit(req, data.get("usage"))
            if request.stream:
                return StreamAnswer(
                    _events(replay(data, include_usage=include_usage)), self._headers(req, None)
                )
            return Answer(cached, self._headers(req, None))
        upstream_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        if request.stream:
            return Upstream(self._stream(req, upstream_body, key, include_usage, prompt))
        return Upstream(self._complete(req, upstream_body, key, prompt))

    async def _complete(
        self, req: _Request, body: dict[str, Any], key: str | None, prompt: int
    ) -> Answer:
        with self.accounts.open(req, prompt_estimate=prompt) as ledger:
            completion, deployment = await self._call(
                req, ledger, self.router.complete(req.group, body, attempts=ledger.attempts)
            )
            ledger.answered(deployment, completion.data)
        if key is not None and req.directives.store and cacheable(completion.data):
            self._in_background(self.cache.set(key, completion.body, req.directives.ttl))
        return Answer(completion.body, self._headers(req, deployment))

    async def embeddings(
        self,
        caller: Caller,
        body: dict[str, Any],
        directives: CacheDirectives,
        admit: Admit | None = None,
    ) -> Answer | Upstream:
        request = validate_embeddings(body)
        req = _Request(caller, self._resolve(request.model), "embeddings", body, directives)
        tracing.annotate_request(tenant=caller.tenant, group=req.group)
        await self.admission.authorize(req.caller, req.group)
        key = self._key(req)
        estimate = prompt_tokens(request.input)
        cached = await self._gate(req, key, admit, estimate)
        if cached is not None:
            self.accounts.hit(req, orjson.loads(cached).get("usage"))
            return Answer(cached, self._headers(req, None))
        return Upstream(self._embed(req, key, estimate))

    async def _embed(self, req: _Request, key: str | None, prompt: int) -> Answer:
        with self.accounts.open(req, prompt_estimate=prompt) as ledger:
            result, deployment = await self._call(
                req, ledger, self.router.embed(req.group, dict(req.body), attempts=ledger.attempts)
            )
            ledger.answered(deployment, result.data)
        if key is not None and req.directives.store:
            self._in_background(self.cache.set(key, result.body, req.directives.ttl))
        return Answer(result.body, self._headers(req, deployment))

    # -- steps ---------------------------------------------------------------------
    def _resolve(self, model: str) -> str:
        group = self.router.resolve(model)
        if group is None:
            raise NotFoundError(
                f"The model '{model}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        return group

    def _key(self, req: _Request) -> str | None:
        if not self.cache.enabled:
            return None
        return cache_key(
            tenant=req.caller.tenant, endpoint=req.endpoint, group=req.group, body=req.body
        )

    async def _gate(
        self, req: _Request, key: str | None, admit: Admit | None, estimate: int
    ) -> bytes | None:
        """The request-rate check, the cache lookup and, for a miss, the token
        check (`req.grant`). When the lookup needs Redis the three go out
        together, in one round trip — each round trip is a pass of the event
        loop for every request waiting on it — and the tokens of a hit are
        given back."""
        if key is None or not req.directives.lookup or self.cache.local.get(key) is not None:
            if admit is not None:
                await admit()
            cached = await self._lookup(req, key)
            if cached is None:
                req.grant = await self.admission.admit_tokens(req.caller, estimate)
            return cached
        lookup = asyncio.ensure_future(self._lookup(req, key))
        tokens = asyncio.ensure_future(self.admission.admit_tokens(req.caller, estimate))
        try:
            if admit is not None:
                await admit()
            cached = await lookup
        except BaseException:
            lookup.cancel()
            self._give_back(req, tokens)
            raise
        if cached is not None:
            self._give_back(req, tokens)
            return cached
        req.grant = await tokens  # over the token limit: the 429 is raised here
        return None

    def _give_back(self, req: _Request, tokens: asyncio.Future[TokenGrant | None]) -> None:
        """Tokens counted for a call that will not happen are returned."""

        def settle(done: asyncio.Future[TokenGrant | None]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            grant = done.result()
            if grant is not None:
                self._in_background(self.admission.settle(req.caller, grant, tokens=0, cost=0.0))

        tokens.add_done_callback(settle)

    async def _lookup(self, req: _Request, key: str | None) -> bytes | None:
        if key is None or not req.directives.lookup:
            req.cache_status = "bypass"
            tracing.annotate_cache("bypass")
            return None
        cached = await self.cache.get(key)
        req.cache_status = "hit" if cached is not None else "miss"
        tracing.annotate_cache(req.cache_status)
        return cached

    async def _call(self, req: _Request, ledger: Ledger, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call
        except (ProviderError, NoDeploymentAvailable) as error:
            ledger.failed(error)
            raise to_gateway_error(error) from None
        finally:
            req.upstream_seconds += time.perf_counter() - started

    async def _stream(
        self, req: _Request, body: dict[str, Any], key: str | None, include_usage: bool, prompt: int
    ) -> StreamAnswer:
        """Open the upstream stream. The ledger settles here if opening fails or
        is abandoned; once the events are handed out, they settle it."""
        ledger = self.accounts.open(req, prompt_estimate=prompt, stream=True)
        opening = asyncio.ensure_future(
            self.router.open_stream(req.group, body, attempts=ledger.attempts)
        )
        try:
            started = time.perf_counter()
            done, _ = await asyncio.wait({opening}, timeout=self.heartbeat_seconds)
            req.upstream_seconds += time.perf_counter() - started
            deployment = None
            if done:  # errors before any byte is sent get their real HTTP status
                try:
                    deployment = opening.result().deployment
                except (ProviderError, NoDeploymentAvailable) as error:
                    ledger.failed(error)
                    raise to_gateway_error(error) from None
        except BaseException as error:
            self._discard(opening)
            ledger.ended(error)
            raise
        events = self._relay(req, ledger, opening, key, include_usage)
        return StreamAnswer(
            MeteredStream(events, ledger, lambda: self._discard(opening)),
            self._headers(req, deployment),
        )

    def _discard(self, opening: asyncio.Future[StreamHandle]) -> None:
        """An upstream stream nobody will read: cancel its opening, or close it."""
        if not opening.done():
            opening.cancel()

        def close(done: asyncio.Future[StreamHandle]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._in_background(_aclose(done.result().rest))

        opening.add_done_callback(close)

    async def _relay(
        self,
        req: _Request,
        ledger: Ledger,
        opening: asyncio.Future[StreamHandle],
        key: str | None,
        include_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        """Forward chunks as they arrive. While the upstream is slow to start, keep
        the client's connection alive with comments (no data yet, so retries and
        fallbacks still happen invisibly); an upstream failure after the first
        byte ends the stream with an error event, never a clean [DONE]. One
        generator, not two: each delegation would cost every chunk a hop."""
        handle: StreamHandle | None = None
        reader: asyncio.Task[None] | None = None
        try:
            while not opening.done():
                yield HEARTBEAT
                await asyncio.wait({opening}, timeout=self.heartbeat_seconds)
            try:
                handle = opening.result()
            except (ProviderError, NoDeploymentAvailable) as error:
                ledger.failed(error)
                note_answered(ledger.fault)  # the client's answer, though its status was 200
                gateway_error = to_gateway_error(error)
                yield sse_error(
                    gateway_error.message,
                    code=gateway_error.code or "upstream_error",
                    error_type=gateway_error.error_type,
                )
                return
            deployment = ledger.deployment = handle.deployment
            assembler = StreamAssembler()
            queue: asyncio.Queue[Chunk | ProviderError | None] = asyncio.Queue()
            reader = asyncio.create_task(pump(handle, queue))
            first = True
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat_seconds):
                        item = await queue.get()
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                if item is None:
                    break
                if isinstance(item, ProviderError):
                    ledger.cut()
                    note_answered(ledger.fault)
                    metrics.LLM_UPSTREAM_ERRORS.labels(deployment.kind, req.group, item.kind).inc()
                    log.warning("stream_cut", deployment=deployment.id, kind=item.kind)
                    yield sse_error(
                        "The upstream provider failed mid-stream; the answer is incomplete.",
                        code="stream_interrupted",
                    )
                    return
                ledger.chunk(item.data)
                assembler.add(item.data)
                payload = client_payload(item, include_usage)
                if payload is None:
                    continue
                if first:
                    first = False
                    ledger.first_sent()
                yield sse(payload)
            ledger.finished()
            yield DONE
            self._store_stream(req, key, assembler)
        except BaseException as error:  # GeneratorExit when closed, CancelledError, a bug
            ledger.ended(error)
            raise
        finally:
            ledger.close()  # first, before any await a cancellation could cut short
            if handle is None:
                self._discard(opening)
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    def _store_stream(self, req: _Request, key: str | None, assembler: StreamAssembler) -> None:
        if key is None or not req.directives.store or not assembler.complete:
            return
        completion = assembler.completion()
        if cacheable(completion):
            self._in_background(self.cache.set(key, orjson.dumps(completion), req.directives.ttl))

    # -- accounting ----------------------------------------------------------------
    def _headers(self, req: _Request, deployment: Deployment | None) -> dict[str, str]:
        overhead = (time.perf_counter() - req.started - req.upstream_seconds) * 1000
        headers = {
            "x-cache": req.cache_status,
            "x-skygate-model-group": req.group,
            "x-skygate-overhead-ms": f"{max(overhead, 0.0):.3f}",
        }
        if deployment is not None:
            headers["x-skygate-provider"] = "demo" if deployment.kind == "demo" else deployment.kind
            headers["x-skygate-model"] = deployment.model
        if self.demo:
            headers["x-skygate-demo"] = "true"
        if req.grant is not None:
            headers.update(req.grant.headers)
        return headers

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for the background work started so far (cache stores, settlements)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()


async def _events(items: Iterable[bytes]) -> AsyncGenerator[bytes, None]:
    for item in items:
        yield item


async def _aclose(events: AsyncIterator[Chunk]) -> None:
    with contextlib.suppress(Exception):
        await events.aclose()  # type: ignore[attr-defined]
