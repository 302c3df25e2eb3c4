"""The usage ledger: one entry per upstream LLM call, however the call ends.

The pipeline (`core.gateway.completions`) opens a `Ledger` from `Accounts.open()` around
each upstream call — a `with` block, or handed on to the stream that finishes
the call — and closing it writes the call's one usage record and settles the
caller's token limit and month's spend with it. It closes from `__exit__`
whatever ended the call (an answer, a provider error, a cut stream, the client
leaving, cancellation, a timeout); `close()` is idempotent (the first close
counts, later ones do nothing) and never raises into the request. A cache hit
is no upstream call: `Accounts.hit()` writes its one record directly.

Tokens, in order of trust:
1. what the provider reported (the answer's `usage`, or a stream's usage chunk)
   — kept as is, never replaced by an estimate, even if the stream was cut;
2. nothing, for a call the provider refused (an error status, no connection,
   every deployment cooling down): providers do not bill those;
3. otherwise an estimate, and the record says so (`estimated`): the prompt from
   the request, and the completion from what was streamed (or, for an answer
   without `usage`, from its text). This covers a stream the client or the
   provider cut, a call abandoned or cancelled mid-flight, a timeout and an
   unreadable answer — each may have been billed by the provider. Before, those
   were recorded as 0 tokens and $0 and their whole admission estimate given
   back (five cut streams left a $0.01 budget untouched).

The estimator is the only one in Skygate: about 4 characters per token
(OpenAI's rule of thumb for English), over the JSON of the prompt and over the
streamed text (content, refusal, reasoning, tool-call names and arguments),
and at least one token per chunk that carried text (a provider streams about
one token per chunk). It errs high for JSON-heavy prompts, which a budget
prefers to erring low.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol

import orjson
import structlog

from core.errors import CALLER_DISCONNECTED, GATEWAY_INTERNAL, STREAM_INTERRUPTED
from core.gateway.usage import UsageEvent, UsageRecorder
from core.limits.admission import Admission, Caller, TokenGrant
from core.llm.failures import failure_outcome, to_gateway_error
from core.llm.router import NoDeploymentAvailable, Router
from core.llm.types import Deployment, ProviderError, Usage
from core.observability import metrics

log = structlog.get_logger("skygate.ledger")
CHARS_PER_TOKEN = 4
# Failures after which the provider did no billable work, or (`local`) that were
# Skygate's own: a tenant is never billed an estimate for the gateway's bug.
REFUSED_KINDS = frozenset({"status", "connect", "local"})
_TEXT_FIELDS = ("content", "refusal", "reasoning_content")
Background = Callable[[Coroutine[Any, Any, None]], None]


def prompt_tokens(value: Any) -> int:
    """Estimated tokens of a prompt (`messages`, or an embeddings `input`)."""
    return len(orjson.dumps(value)) // CHARS_PER_TOKEN + 1


def text_chars(part: Any) -> int:
    """Characters of generated text in a message or a stream delta."""
    if not isinstance(part, dict):
        return 0
    chars = 0
    for name in _TEXT_FIELDS:
        value = part.get(name)
        if isinstance(value, str):
            chars += len(value)
    calls = part.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, dict):
                chars += _function_chars(call.get("function"))
    return chars + _function_chars(part.get("function_call"))  # and the legacy single call


def _function_chars(function: Any) -> int:
    if not isinstance(function, dict):
        return 0
    name, arguments = function.get("name"), function.get("arguments")
    return (len(name) if isinstance(name, str) else 0) + (
        len(arguments) if isinstance(arguments, str) else 0
    )


class Metered(Protocol):
    """What the ledger reads from the pipeline's request when it closes."""

    caller: Caller
    group: str
    endpoint: str
    started: float
    upstream_seconds: float
    cache_status: str
    grant: TokenGrant | None


class Ledger:
    """The entry for one upstream call. The pipeline reports what happened
    (`answered`, `failed`, `chunk`, `first_sent`, `finished`, `cut`); `close()`
    settles. `fault` is the `error_type` its metrics carry: that of the error the
    client was answered with (`core.errors`), "" for a success."""

    __slots__ = (
        "_accounts",
        "_chars",
        "_chunks",
        "_closed",
        "_finished_at",
        "_first_at",
        "_refused",
        "_stream",
        "_usage",
        "attempts",
        "deployment",
        "fault",
        "outcome",
        "prompt_estimate",
        "req",
    )

    def __init__(
        self, accounts: Accounts, req: Metered, *, prompt_estimate: int, stream: bool
    ) -> None:
        self._accounts = accounts
        self.req = req
        self.prompt_estimate = prompt_estimate
        self._stream = stream
        self.attempts: list[Deployment] = []  # filled by the router, one per attempt
        self.deployment: Deployment | None = None
        self.outcome: str | None = None
        self.fault = ""
        self._first_at: float | None = None  # perf_counter() of the first chunk sent
        self._finished_at: float | None = None
        self._usage: dict[str, Any] | None = None
        self._chars = 0
        self._chunks = 0
        self._refused = False
        self._closed = False

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.ended(error)

    def ended(self, error: BaseException | None) -> None:
        """Close, labelling an outcome not reported yet by what ended the call."""
        if error is not None and self.outcome is None:
            cancelled = isinstance(error, asyncio.CancelledError | GeneratorExit)
            self.outcome = "cancelled" if cancelled else "error"
            self.fault = CALLER_DISCONNECTED if cancelled else GATEWAY_INTERNAL
        self.close()

    # -- what happened -------------------------------------------------------------
    def answered(self, deployment: Deployment, data: dict[str, Any]) -> None:
        self.deployment = deployment
        self.outcome = "success"
        self._reported(data.get("usage"))
        if self._usage is None:
            for choice in data.get("choices") or ():
                if isinstance(choice, dict):
                    self._count(text_chars(choice.get("message")))

    def failed(self, error: ProviderError | NoDeploymentAvailable) -> None:
        self.outcome = failure_outcome(error)
        self.fault = to_gateway_error(error).fault  # what the client is answered
        self._refused = isinstance(error, NoDeploymentAvailable) or error.kind in REFUSED_KINDS

    def chunk(self, data: dict[str, Any]) -> None:
        """One streamed chunk: its text is counted, its usage (if any) kept."""
        for choice in data.get("choices") or ():
            if isinstance(choice, dict):
                self._count(text_chars(choice.get("delta")))
        if "usage" in data:
            self._reported(data["usage"])

    def first_sent(self) -> None:
        """The stream's first chunk went to the client: its time to first token."""
        self._first_at = now = time.perf_counter()
        if self.deployment is not None:
            metrics.LLM_TTFT.labels(self.deployment.kind, self.req.group).observe(
                now - self.req.started
            )

    def finished(self) -> None:
        self.outcome = "success"
        self._finished_at = time.perf_counter()

    def cut(self) -> None:
        self.outcome = "stream_cut"
        self.fault = STREAM_INTERRUPTED

    def time_per_output_token(self, completion: int) -> float | None:
        """Seconds per token after the first, for a stream that finished (None for
        anything else, or fewer than two tokens): OpenTelemetry's
        gen_ai.server.time_per_output_token, over every choice's tokens."""
        if self._first_at is None or self._finished_at is None or completion < 2:
            return None
        return (self._finished_at - self._first_at) / (completion - 1)

    def _count(self, chars: int) -> None:
        if chars:
            self._chars += chars
            self._chunks += 1

    def _reported(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage = usage

    # -- settlement ----------------------------------------------------------------
    def tokens(self) -> tuple[int, int, bool]:
        """(prompt, completion, estimated) — see the module docstring."""
        if self._usage is not None:
            usage = Usage.from_openai(self._usage)
            return usage.prompt_tokens, usage.completion_tokens, False
        if self._refused or self.billed_to is None:
            return 0, 0, False
        completion = max(-(-self._chars // CHARS_PER_TOKEN), self._chunks)
        return self.prompt_estimate, completion, True

    @property
    def billed_to(self) -> Deployment | None:
        """The deployment that answered or, for a call that ended in flight, the
        one last tried (None: no provider did any work)."""
        if self.deployment is not None:
            return self.deployment
        if self._refused or not self.attempts:
            return None
        return self.attempts[-1]

    @property
    def stream(self) -> bool:
        return self._stream

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._accounts.settle(self)
        except Exception as exc:  # accounting must never fail the request it accounts for
            log.error("ledger_settle_failed", error=type(exc).__name__)


class Accounts:
    """Where ledgers settle: the usage records, the token limit and the month's
    spend (in the background), the router's per-deployment token windows, metrics."""

    def __init__(
        self,
        *,
        usage: UsageRecorder,
        admission: Admission,
        router: Router,
        background: Background,
    ) -> None:
        self.usage = usage
        self.admission = admission
        self.router = router
        self.background = background

    def open(self, req: Metered, *, prompt_estimate: int, stream: bool = False) -> Ledger:
        return Ledger(self, req, prompt_estimate=prompt_estimate, stream=stream)

    def hit(self, req: Metered, usage: Any) -> None:
        """A cache hit: one record (provider "cache", no cost); its admitted
        tokens were given back when the lookup hit."""
        tokens = Usage.from_openai(usage)
        self._record(req, None, tokens.prompt_tokens, tokens.completion_tokens, 0.0, "success", "")

    def settle(self, ledger: Ledger) -> None:
        req = ledger.req
        prompt, completion, estimated = ledger.tokens()
        deployment = ledger.billed_to
        cost = 0.0
        if deployment is not None:
            cost = self.router.cost(deployment, prompt, completion)
            tenant = metrics.tenant_label(req.caller.tenant)
            metrics.LLM_TOKENS.labels(deployment.kind, req.group, tenant, "prompt").inc(prompt)
            metrics.LLM_TOKENS.labels(deployment.kind, req.group, tenant, "completion").inc(
                completion
            )
            metrics.LLM_COST.labels(deployment.kind, req.group, tenant).inc(cost)
            if ledger.stream:
                self.router.count_stream_tokens(deployment, prompt + completion)
                per_token = ledger.time_per_output_token(completion)
                if per_token is not None:
                    metrics.LLM_TPOT.labels(deployment.kind, req.group).observe(per_token)
        if cost or req.grant is not None:
            self.background(
                self.admission.settle(req.caller, req.grant, tokens=prompt + completion, cost=cost)
            )
        outcome, fault = ledger.outcome, ledger.fault
        if outcome is None:  # closed before anything was reported: abandoned
            outcome, fault = "cancelled", CALLER_DISCONNECTED
        self._record(req, deployment, prompt, completion, cost, outcome, fault, estimated=estimated)

    def _record(
        self,
        req: Metered,
        deployment: Deployment | None,
        prompt: int,
        completion: int,
        cost: float,
        outcome: str,
        fault: str,
        *,
        estimated: bool = False,
    ) -> None:
        elapsed = time.perf_counter() - req.started
        provider = (
            deployment.kind if deployment else ("cache" if req.cache_status == "hit" else "none")
        )
        metrics.LLM_REQUESTS.labels(provider, req.group, outcome, fault).inc()
        metrics.LLM_DURATION.labels(provider, req.group).observe(elapsed)
        metrics.GATEWAY_OVERHEAD.labels(req.endpoint).observe(
            max(elapsed - req.upstream_seconds, 0.0)
        )
        run = req.caller.run
        event = UsageEvent(
            request_id=req.caller.request_id,
            tenant=req.caller.tenant,
            api_key_id=req.caller.api_key_id,
            model_group=req.group,
            provider=provider,
            model=deployment.model if deployment else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
            latency_ms=round(elapsed * 1000, 3),
            cache_status=req.cache_status,
            outcome=outcome,
            estimated=estimated,
        )
        if run is not None:
            event.agent_id, event.run_id, event.turn = run.agent_id, run.run_id, run.turn
            if run.observe is not None:
                run.observe(event)
        self.usage.record(event)


class MeteredStream:
    """The events of a streamed upstream call. `aclose()` — which every
    transport calls however its response ended — closes the events and settles
    the ledger at that moment: an async generator abandoned mid-way is otherwise
    finalised only when garbage collected, and one never started skips its
    `finally` altogether (then `discard` releases the upstream stream)."""

    __slots__ = ("_discard", "_events", "_ledger", "_started")

    def __init__(
        self, events: AsyncGenerator[bytes, None], ledger: Ledger, discard: Callable[[], None]
    ) -> None:
        self._events = events
        self._ledger = ledger
        self._discard = discard
        self._started = False

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        # The transport iterates the generator itself: no extra hop per event.
        self._started = True
        return self._events

    async def __anext__(self) -> bytes:
        self._started = True
        return await anext(self._events)

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # runs its `finally` if it ever started
        finally:
            try:
                if not self._started:
                    self._discard()
            finally:
                self._ledger.close()
