"""`chat.batch`: many chat completions as one job, each through the chat route's pipeline.

Input `{"requests": [<chat completion bodies>], "concurrency": n}` (1..1000 bodies,
1..16 at once, default 4); result `{"object": "list", "data": [{"index", "status",
"response", "error"}]}` in request order, `status` "success" with the chat
completion or "error" with OpenAI's error object.

Each request is what `POST /api/v1/chat/completions` would have been for the key
that submitted the job (`core.gateway.completions`): the same validation (a bad
body is that request's error, never the job's), the key's models, budget and
token limit, the cache, and one usage row per call. The worker has no HTTP edge,
so the key's principal is rebuilt from its row by the edge's own rules
(`core.auth.authenticator.key_refusal` / `key_principal`) and re-read as often as
the edge re-reads it (AUTH_CACHE_SECONDS): a key revoked, disabled or expired
meanwhile fails the job with `key_revoked`.

Pacing: the request-rate check is the route's (each request counted once, refused
bodies included, as the route counts them). A refusal by it or by the token limit
is not an answer: the request waits the refusal's own retry-after and asks again,
so a batch runs at the tenant's limit instead of collecting 429s.

`stream: true` is refused per request (`stream_not_supported`) rather than forced
off: the result holds completion objects, and forcing it off would silently answer
another request than the one written (`stream_options`, chunk shapes); refusing
costs nothing upstream and tells the client which entries to fix.

Checkpoint: every answer is saved with the progress it makes, writes coalesced
under one lock (answers that arrive while a write runs go out with the next one),
so a job redelivered after a crash starts from them and never sends an answered
request upstream again; a request in flight at the crash had no answer and is sent
again. A cancel takes effect at the next progress write or pacing check; requests
in flight then are cancelled, and the ledger settles their usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from core.auth.authenticator import (
    ADMIN_SUBJECT,
    KeyInfo,
    Principal,
    key_principal,
    key_refusal,
)
from core.auth.request_rate import Paced, RequestRate, admission_wait
from core.config import Settings
from core.errors import BadRequestError, GatewayError, InvalidJSONError
from core.gateway.cache import CacheDirectives
from core.gateway.completions import CompletionService, StreamAnswer, Upstream
from core.jobs.types import JobContext, JobFailed, JobType, RetryableJobError
from core.limits.rate_limit import RateLimiter
from database.repositories.keys import KeyRepository

NAME = "chat.batch"
MAX_REQUESTS = 1000
MAX_CONCURRENCY = 16
PACE_CHECK_SECONDS = 1.0  # a request waiting out a refusal looks for a cancel this often
PACE_MIN_SECONDS = 0.05  # the limiter's wait is exact; this keeps a wake-up past the edge
# At the default limits (60 a minute, 1,000 an hour) 1,000 requests need about an
# hour of pacing alone: the seeds' 20/30-minute limits would fail a batch that is
# only waiting its turn. The hard limit stays a little above the soft one.
SOFT_LIMIT_SECONDS = 2 * 3600
HARD_LIMIT_SECONDS = SOFT_LIMIT_SECONDS + 600


class ChatBatch(BaseModel):
    """The job's input. Bodies are `Any` here: each is validated as the chat route
    validates it, and a bad one is an error in the result, not a 422 for the job."""

    model_config = ConfigDict(extra="forbid")

    requests: list[Any] = Field(min_length=1, max_length=MAX_REQUESTS)
    concurrency: int = Field(default=4, ge=1, le=MAX_CONCURRENCY)


class KeyCredentials:
    """The submitting key's principal, re-read from its row once it is older than
    the edge's auth cache (one read shared by the requests asking meanwhile)."""

    def __init__(
        self,
        keys: KeyRepository,
        *,
        key_id: str | None,
        tenant: str,
        max_age: float,
        what: str = "batch",
    ) -> None:
        self.keys = keys
        self.what = what
        self.key_id = key_id
        self.tenant = tenant
        self.max_age = max_age
        self._principal: Principal | None = None
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def principal(self) -> Principal:
        if self._principal is not None and time.monotonic() < self._fresh_until:
            return self._principal
        async with self._lock:
            if self._principal is None or time.monotonic() >= self._fresh_until:
                self._principal = await self._read()
                self._fresh_until = time.monotonic() + self.max_age
            return self._principal

    async def _read(self) -> Principal:
        if self.key_id is None:  # the admin key, or the open development edge
            return _keyless(self.tenant)
        try:
            row = await self.keys.by_id(self.key_id)
        except (SQLAlchemyError, OSError) as exc:  # the database away: resume later
            raise RetryableJobError(
                f"the API key could not be read ({type(exc).__name__})"
            ) from exc
        if row is None or row.tenant != self.tenant:
            raise JobFailed(
                f"The API key that submitted this {self.what} no longer exists; the "
                f"{self.what} stopped.",
                code="key_revoked",
            )
        info = KeyInfo.from_row(row)
        refused = key_refusal(info)
        if refused is not None:
            raise JobFailed(f"{refused[1]} The {self.what} stopped.", code="key_revoked")
        return key_principal(info)


def _keyless(tenant: str) -> Principal:
    """A job submitted without a key: by the admin (the edge's admin principal),
    or on the open development edge, which limits by address; the worker has none,
    so the tenant stands in for it."""
    if tenant == ADMIN_SUBJECT:
        return Principal(tenant=ADMIN_SUBJECT, key_id=None, admin=True, limit_key="admin")
    return Principal(tenant=tenant, key_id=None, admin=False, limit_key=f"tenant:{tenant}")


class _Progress:
    """Progress and checkpoint, written under one lock: a writer finds the answers
    that arrived while it waited already saved, or saves them all in one write."""

    def __init__(self, ctx: JobContext, answers: dict[int, dict[str, Any]], total: int) -> None:
        self.ctx = ctx
        self.answers = answers
        self.total = total
        self.saved = -1
        self._lock = asyncio.Lock()

    async def save(self) -> None:
        async with self._lock:
            done = len(self.answers)
            if done == self.saved:
                return
            await self.ctx.progress(
                current_step=done,
                total_steps=self.total,
                step="requests",
                message=f"{done} of {self.total} requests answered",
                checkpoint={"answers": {str(i): entry for i, entry in self.answers.items()}},
            )
            self.saved = done


def _resumed(checkpoint: Any, total: int) -> dict[int, dict[str, Any]]:
    """The answers a previous delivery saved (anything else in it is ignored)."""
    saved = checkpoint.get("answers") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        return {}
    answers = {}
    for key, entry in saved.items():
        if isinstance(key, str) and key.isdigit() and int(key) < total and isinstance(entry, dict):
            answers[int(key)] = entry
    return answers


def _success(index: int, body: bytes) -> dict[str, Any]:
    return {"index": index, "status": "success", "response": orjson.loads(body), "error": None}


def _error(index: int, error: GatewayError) -> dict[str, Any]:
    return {"index": index, "status": "error", "response": None, "error": error.body()["error"]}


def _refused_body(body: Any) -> GatewayError | None:
    """What the batch refuses before the pipeline sees a body: not an object (the
    route's own parser says so of a JSON body), or a stream (see the docstring)."""
    if not isinstance(body, dict):
        return InvalidJSONError("The request body must be a JSON object.")
    if body.get("stream") is True:
        return BadRequestError(
            "Streaming is not supported inside a batch: remove 'stream' (the result "
            "holds each chat completion).",
            param="stream",
            code="stream_not_supported",
        )
    return None


async def _wait(ctx: JobContext, seconds: float) -> None:
    deadline = time.monotonic() + max(seconds, PACE_MIN_SECONDS)
    while (left := deadline - time.monotonic()) > 0:
        await ctx.checkpoint()  # a cancel is not kept waiting for the tenant's limit
        await asyncio.sleep(min(left, PACE_CHECK_SECONDS))


class _Batch:
    def __init__(self, ctx: JobContext, credentials: KeyCredentials) -> None:
        resources = ctx.services  # core.jobs.registry.JobResources
        self.ctx = ctx
        self.credentials = credentials
        self.settings: Settings = resources.settings
        self.completions: CompletionService = resources.gateway.completions
        self.limiter: RateLimiter = resources.gateway.limiter

    async def answer(self, index: int, body: Any) -> dict[str, Any]:
        refused = _refused_body(body)
        admit: RequestRate | None = None  # one per request: it is counted once
        while True:
            principal = await self.credentials.principal()  # each try: waiting is no escape
            caller = principal.caller(f"{self.ctx.job_id}:{index}")
            if admit is None:
                admit = RequestRate(self.limiter, principal, self.settings)
            admit.principal = principal  # the key's limits as they are now
            try:
                if refused is not None:
                    raise refused
                outcome = await self.completions.chat(caller, body, CacheDirectives(), admit)
                if isinstance(outcome, Upstream):
                    outcome = await outcome.call
                if isinstance(outcome, StreamAnswer):  # unreachable: streams are refused
                    await outcome.events.aclose()
                    raise BadRequestError("Streaming is not supported inside a batch.")
                return _success(index, outcome.body)
            except Paced as paced:
                await _wait(self.ctx, paced.seconds)
            except GatewayError as error:
                wait = admission_wait(error)
                if wait is not None:
                    await _wait(self.ctx, wait)
                    continue
                try:
                    await admit()  # refused before its check: counted, as the route counts it
                except Paced as paced:
                    await _wait(self.ctx, paced.seconds)
                    continue
                return _error(index, error)


async def _first_failure(workers: list[Coroutine[Any, Any, None]]) -> None:
    """Run the workers; the first to fail stops the others and its error is the
    job's (JobCancelled, JobFailed, ... as the runner expects them, not a group)."""
    try:
        async with asyncio.TaskGroup() as group:
            for worker in workers:
                group.create_task(worker)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def run_chat_batch(batch: ChatBatch, ctx: JobContext) -> dict[str, Any]:
    resources = ctx.services
    total = len(batch.requests)
    answers = _resumed(ctx.resume, total)
    credentials = KeyCredentials(
        KeyRepository(resources.jobs.sessions),  # a key row is read by its own repository
        key_id=ctx.api_key_id,
        tenant=ctx.tenant,
        max_age=resources.settings.auth_cache_seconds,
    )
    await credentials.principal()  # a key refused before the first request fails the job now
    progress = _Progress(ctx, answers, total)
    await progress.save()  # also where a cancel that came while queued takes effect
    runner = _Batch(ctx, credentials)
    todo: Iterator[int] = iter([i for i in range(total) if i not in answers])

    async def work() -> None:
        for index in todo:  # shared: each index is taken by one worker
            answers[index] = await runner.answer(index, batch.requests[index])
            await progress.save()

    await _first_failure([work() for _ in range(min(batch.concurrency, total - len(answers)))])
    return {"object": "list", "data": [answers[i] for i in range(total)]}


CHAT_BATCH: JobType[ChatBatch] = JobType(
    NAME,
    ChatBatch,
    run_chat_batch,
    description="Chat completions in bulk, paced to the key's limits, resumable.",
    soft_limit_seconds=SOFT_LIMIT_SECONDS,
    hard_limit_seconds=HARD_LIMIT_SECONDS,
)
