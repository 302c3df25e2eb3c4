"""Job types, registered in code: each has a pydantic input model, a handler, time
limits and a retry policy. A handler gets a `JobContext` and returns the result
(JSON-serialisable); it reports progress, saves a checkpoint to resume from after
a crash or a retry, and stops at its next checkpoint once cancelled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

Input = TypeVar("Input", bound=BaseModel)

SOFT_LIMIT_SECONDS = 20 * 60  # the seeds' Celery limits: soft cancels the job ...
HARD_LIMIT_SECONDS = 30 * 60  # ... hard ends the stuck process (the platform restarts it)


class JobCancelled(Exception):
    """Raised by `JobContext.checkpoint` once the job was cancelled."""


class RetryableJobError(Exception):
    """A failure worth another attempt (a provider outage, the database away)."""


class JobFailed(Exception):
    """A failure the job reports as its error (no retry): `code` and `message`."""

    def __init__(self, message: str, *, code: str = "job_failed", type: str = "job_error") -> None:
        super().__init__(message)
        self.code = code
        self.type = type


class JobContext(Protocol):
    """What a running job sees of the world."""

    job_id: str
    tenant: str
    api_key_id: str | None
    attempt: int
    resume: Any  # the last checkpoint saved, None on a first start
    services: Any  # the gateway layer (core.container.Gateway) of this process

    async def progress(
        self,
        *,
        current_step: int,
        total_steps: int,
        step: str | None = None,
        message: str | None = None,
        checkpoint: Any = None,
    ) -> None:
        """Record progress (and a checkpoint); raises JobCancelled once cancelled."""

    async def checkpoint(self) -> None:
        """Raise JobCancelled if the job was cancelled meanwhile."""


Handler = Callable[[Input, JobContext], Awaitable[Any]]


@dataclass(frozen=True)
class JobType(Generic[Input]):
    name: str
    input_model: type[Input]
    handler: Handler[Input]
    description: str = ""
    soft_limit_seconds: float = SOFT_LIMIT_SECONDS
    hard_limit_seconds: float = HARD_LIMIT_SECONDS
    max_attempts: int = 3  # starts, crashes included: then `worker_lost` / the last error
    retry_base_seconds: float = 2.0  # exponential backoff: base * 2**(attempt - 1) ...
    retry_max_seconds: float = 300.0  # ... capped
    concurrency: int = 4  # running at once across all workers
    public: bool = True  # submittable through the API (maintenance types are not)

    def retry_delay(self, attempt: int) -> float:
        delay = self.retry_base_seconds * 2 ** max(attempt - 1, 0)
        return float(min(delay, self.retry_max_seconds))

    def parse(self, raw: Any) -> Input:
        return self.input_model.model_validate(raw)


@dataclass
class JobTypes:
    """The registry: what can be submitted and what a worker can run."""

    types: dict[str, JobType[Any]] = field(default_factory=dict)

    def add(self, job_type: JobType[Any]) -> None:
        if job_type.name in self.types:
            raise ValueError(f"job type {job_type.name!r} is registered twice")
        self.types[job_type.name] = job_type

    def get(self, name: str) -> JobType[Any] | None:
        return self.types.get(name)

    def __iter__(self) -> Iterator[JobType[Any]]:
        return iter(self.types.values())

    def public_names(self) -> list[str]:
        return sorted(name for name, job_type in self.types.items() if job_type.public)
